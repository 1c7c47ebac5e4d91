"""precision=auto: the choice for injected device capabilities, the resolver, and the recipe."""

from __future__ import annotations

import lightning as L
import pytest

from mlcost_pl.precision import DeviceCaps, detect_caps, resolve_precision
from recipes.train import train
from tests.helpers.cfg import compose_cfg, fast_overrides

A100 = DeviceCaps("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), cuda_bf16=True)
H100 = DeviceCaps("cuda", "NVIDIA H100", (9, 0), cuda_bf16=True)
V100 = DeviceCaps("cuda", "Tesla V100-SXM2-16GB", (7, 0))
T4 = DeviceCaps("cuda", "Tesla T4", (7, 5))
SAPPHIRE_RAPIDS = DeviceCaps("cpu", cpu_bf16=True, cpu_name="Intel Xeon Platinum 8480+")
EPYC_AVX2 = DeviceCaps("cpu", cpu_bf16=False, cpu_name="AMD EPYC 7B12")


@pytest.mark.parametrize(
    ("caps", "expected", "why"),
    [(A100, "bf16-mixed", "sm_80"), (H100, "bf16-mixed", "natively"), (V100, "16-mixed", "no native bf16"),
     (T4, "16-mixed", "sm_75"), (SAPPHIRE_RAPIDS, "bf16-mixed", "Xeon"), (EPYC_AVX2, "32-true", "emulated")],
)
def test_auto_picks_for_the_device(caps, expected, why):
    precision, reason = resolve_precision("auto", caps)
    assert precision == expected and why in reason


def test_explicit_precision_is_kept_and_cuda_without_device_falls_back():
    assert resolve_precision("16-mixed", EPYC_AVX2) == ("16-mixed", "set explicitly")
    assert resolve_precision("auto", DeviceCaps("cuda"))[0] == "32-true"


def test_detect_caps_on_this_machine_is_consistent():
    caps = detect_caps("cpu")
    assert caps.accelerator == "cpu" and caps.cuda_capability is None
    precision, _ = resolve_precision("auto", caps)
    assert precision == ("bf16-mixed" if caps.cpu_bf16 else "32-true")
    with pytest.raises(ValueError, match="accelerator"):
        detect_caps("tpu")


def test_resolver_in_trainer_auto_yaml_builds_a_trainer(tmp_path):
    cfg = compose_cfg("train", ["trainer=auto"], tmp_path)
    expected, _ = resolve_precision("auto", accelerator="auto")
    assert cfg.trainer.precision == expected
    from hydra.utils import instantiate

    trainer: L.Trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.precision == expected


def test_recipe_accepts_trainer_precision_auto(tmp_path, caplog):
    cfg = compose_cfg("train", fast_overrides("trainer.precision=auto", "trainer.limit_train_batches=1", "test=false"), tmp_path)
    with caplog.at_level("INFO"):
        _, objects = train(cfg)
    expected, reason = resolve_precision("auto", accelerator="cpu")
    assert objects["trainer"].precision == expected
    assert f"trainer.precision=auto -> {expected}: {reason}" in caplog.text
