"""recipes.train: train(cfg) smoke tests and the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.train import train
from tests.helpers.cfg import compose_cfg, fast_overrides

REPO = Path(__file__).resolve().parents[2]


def test_train_fits_tests_and_reports(tmp_path, capsys):
    cfg = compose_cfg("train", fast_overrides("trainer.max_epochs=2"), tmp_path)
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 8
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["throughput/train_samples_per_s"] > 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "wall time" in out
    assert (tmp_path / "run" / "csv" / "metrics.csv").exists()


def test_train_with_imagefolder(tmp_path, image_folder):
    cfg = compose_cfg("train", fast_overrides("data=imagefolder", f"data.root={image_folder}", "data.num_workers=0", "data.image_size=16"), tmp_path)
    metrics, objects = train(cfg)
    assert objects["datamodule"].num_classes == 3
    assert objects["model"].head.out_features == 3
    assert "test/acc" in metrics


@pytest.mark.parametrize("debug", ["fast_dev_run", "limit", "overfit"])
def test_debug_configs_run(tmp_path, debug):
    extra = ["trainer.max_epochs=2"] if debug == "overfit" else []
    cfg = compose_cfg("train", ["model=tiny_cnn", "data.image_size=16", f"debug={debug}", *extra, "trainer.enable_progress_bar=false"], tmp_path)
    _, objects = train(cfg)
    assert objects["trainer"].global_step > 0


def test_ddp_on_cpu_two_processes(tmp_path):
    """trainer=ddp runs two gloo processes on CPU; both see the same data shard split and finish."""
    cfg = compose_cfg("train", fast_overrides("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "test=false"), tmp_path)
    cfg.trainer.strategy = "ddp_spawn"  # in-process test: spawn; the CLI uses `ddp` (subprocess launcher)
    metrics, objects = train(cfg)
    assert objects["trainer"].world_size == 2


def _cli(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLCOST_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "recipes.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_runs_end_to_end(tmp_path):
    proc = _cli(fast_overrides(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlcost_pl train" in proc.stdout and "test accuracy" in proc.stdout
    run_dirs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "csv" / "metrics.csv").exists()


def test_cli_bad_input_is_one_line(tmp_path):
    proc = _cli(["data=imagefolder", f"data.root={tmp_path}/nowhere"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: FileNotFoundError") and f"{tmp_path}/nowhere" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_unknown_backbone_lists_valid_names(tmp_path):
    cfg = compose_cfg("train", fast_overrides("model.backbone=resnet19"), tmp_path)
    with pytest.raises(Exception, match=r"resnet19.*Did you mean: resnet18") as info:
        train(cfg)
    assert "mobilenet_v3_small" in str(info.value)
