"""BatchSizeSearch on a real CPU Trainer: max_fit near a hidden OOM limit, global batch kept, state restored
bit-exactly, cache hits, resume, CPU memory budget, throughput mode."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from mlcost_pl.callbacks import BatchSizeSearch
from mlcost_pl.rightsizing.memory import GIB, measure_step_memory
from tests.helpers.oom_models import HiddenLimitModel


def _trainer(cb, tmp_path, steps=2, **kw):
    return L.Trainer(
        max_steps=steps, callbacks=[cb], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, **kw,
    )


class _SeenAtTrainStart(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pl_module.train_batches = [*getattr(pl_module, "train_batches", []), len(batch[0])]


def test_max_fit_finds_the_hidden_oom_limit_in_12_trials_and_keeps_the_global_batch(tmp_path):
    model = HiddenLimitModel(limit=300, batch_size=512)  # 512 does not fit; the global batch is 512
    cb = BatchSizeSearch(mode="max_fit", keep_global_batch=True, cache_dir=tmp_path / "cache")
    trainer = L.Trainer(max_steps=4, callbacks=[cb, _SeenAtTrainStart()], logger=CSVLogger(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model)
    probes = model.seen[: cb.result.num_trials]
    assert 0.95 * 300 <= cb.result.batch_size <= 300
    assert cb.result.num_trials <= 12 and max(probes) > 300  # it really hit the OOM
    # global batch 512 kept: largest divisor of 512 below the found size, and accumulation
    assert model.batch_size == 256 and trainer.accumulate_grad_batches == 2
    assert model.train_batches == [256] * 8  # 4 optimizer steps x 2 accumulated batches of 256
    assert cb.metrics["batch_size_search/batch_size"] == 256 and cb.metrics["batch_size_search/cache_hit"] == 0
    assert "batch_size_search/trials" in (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()


def test_cache_hit_skips_the_search(tmp_path):
    first = HiddenLimitModel(limit=200)
    cb1 = BatchSizeSearch(keep_global_batch=False, cache_dir=tmp_path / "cache")
    _trainer(cb1, tmp_path).fit(first)
    assert cb1.result.num_trials > 5
    second = HiddenLimitModel(limit=200)
    cb2 = BatchSizeSearch(keep_global_batch=False, cache_dir=tmp_path / "cache")
    _trainer(cb2, tmp_path).fit(second)
    assert cb2.metrics["batch_size_search/cache_hit"] == 1 and cb2.metrics["batch_size_search/trials"] == 0
    assert second.seen == [second.batch_size] * 2  # only the two real training steps ran
    assert second.batch_size == first.batch_size == cb1.result.batch_size
    # a different input shape is a different key: it searches again
    third = HiddenLimitModel(limit=200, in_features=8)
    cb3 = BatchSizeSearch(keep_global_batch=False, cache_dir=tmp_path / "cache")
    _trainer(cb3, tmp_path).fit(third)
    assert cb3.metrics["batch_size_search/cache_hit"] == 0


def _state(model, trainer):
    opt = trainer.optimizers[0]
    return {
        "params": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "opt": {id_: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for id_, s in opt.state_dict()["state"].items()},
        "groups": [dict(g) for g in opt.state_dict()["param_groups"]],
        "rng": torch.get_rng_state().clone(),
        "training": model.training,
    }


def _assert_same(a, b):
    assert a["params"].keys() == b["params"].keys()
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    for k in a["grads"]:
        assert (a["grads"][k] is None and b["grads"][k] is None) or torch.equal(a["grads"][k], b["grads"][k]), k
    assert a["opt"].keys() == b["opt"].keys()
    for i in a["opt"]:
        for k, v in a["opt"][i].items():
            assert torch.equal(v, b["opt"][i][k]) if torch.is_tensor(v) else v == b["opt"][i][k]
    assert a["groups"] == b["groups"]
    assert torch.equal(a["rng"], b["rng"]) and a["training"] == b["training"]


@pytest.mark.parametrize("mode", ["max_fit", "throughput"])
def test_state_is_restored_bit_exactly_after_a_search_mid_training(tmp_path, mode):
    model = HiddenLimitModel(limit=150, batch_size=16)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)  # optimizer state, BatchNorm running stats and grads now exist
    model.net[0].weight.grad = torch.full_like(model.net[0].weight, 0.5)
    before = _state(model, trainer)
    cb = BatchSizeSearch(mode=mode, use_cache=False, max_trials=8)
    result, hit = cb.search(trainer, model)
    assert not hit and result.num_trials >= 3 and result.batch_size >= 1
    _assert_same(before, _state(model, trainer))
    assert model.batch_size == 16  # search() alone does not change the batch size
    assert "log" not in vars(model)  # logging restored


def test_lr_scaling_linear_and_sqrt(tmp_path):
    for scaling, expect in (("linear", lambda r: r), ("sqrt", math.sqrt), ("none", lambda r: 1.0)):
        model = HiddenLimitModel(limit=64, batch_size=16, lr=0.01)
        cb = BatchSizeSearch(init_batch_size=16, safety_margin=0.0, lr_scaling=scaling, keep_global_batch=False, use_cache=False)
        trainer = _trainer(cb, tmp_path, steps=1)
        trainer.fit(model)
        ratio = model.batch_size / 16
        assert model.batch_size == 64
        assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * expect(ratio))
        assert cb.metrics["batch_size_search/lr_scale"] == pytest.approx(expect(ratio))


def test_resume_reapplies_the_checkpointed_size_without_searching(tmp_path):
    model = HiddenLimitModel(limit=100, batch_size=256)
    cb = BatchSizeSearch(keep_global_batch=True, use_cache=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    L.Trainer(max_steps=2, callbacks=[cb, ckpt], logger=False, enable_progress_bar=False, enable_model_summary=False).fit(model)
    assert (model.batch_size, cb.applied["accumulate_grad_batches"]) == (64, 4)

    resumed = HiddenLimitModel(limit=100, batch_size=256)
    cb2 = BatchSizeSearch(keep_global_batch=True, use_cache=False)
    trainer = L.Trainer(max_steps=3, callbacks=[cb2], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(resumed, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert cb2.result is None  # no search
    assert resumed.batch_size == 64 and trainer.accumulate_grad_batches == 4
    assert set(resumed.seen) == {64}


def test_cpu_memory_budget_from_measured_peak(tmp_path):
    model = HiddenLimitModel(limit=10**9, batch_size=8, in_features=512, n_samples=4096)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(200, 512)
    y = torch.zeros(200, dtype=torch.long)
    budget = measure_step_memory(lambda: torch.nn.functional.cross_entropy(model(x), y), model, opt).peak_bytes
    model.zero_grad(set_to_none=True)
    cb = BatchSizeSearch(max_memory_gb=budget / GIB, safety_margin=0.0, use_cache=False)
    _trainer(cb, tmp_path, steps=1).fit(model)
    assert 0.95 * 200 <= cb.result.batch_size <= 200


def test_throughput_mode_picks_a_measured_size_within_tolerance(tmp_path):
    model = HiddenLimitModel(limit=256, batch_size=8)
    cb = BatchSizeSearch(mode="throughput", init_batch_size=16, throughput_tolerance=0.1, keep_global_batch=False, use_cache=False)
    _trainer(cb, tmp_path, steps=1).fit(model)
    speeds = cb.result.samples_per_s
    assert set(speeds) <= {16, 32, 64, 128, 256} and cb.result.batch_size in speeds
    assert speeds[cb.result.batch_size] >= 0.9 * max(speeds.values())
    assert model.batch_size == cb.result.batch_size


def test_bad_arguments_are_named(tmp_path):
    for kwargs, name in (({"mode": "fastest"}, "mode"), ({"lr_scaling": "cubic"}, "lr_scaling"),
                         ({"max_memory_gb": 0}, "max_memory_gb"), ({"safety_margin": 1.5}, "safety_margin")):
        with pytest.raises(ValueError, match=name):
            BatchSizeSearch(**kwargs)
    cb = BatchSizeSearch(batch_arg_name="bs", use_cache=False)
    with pytest.raises(ValueError, match="batch_arg_name='bs'"):
        _trainer(cb, tmp_path).fit(HiddenLimitModel())


class _RankLimitModel(HiddenLimitModel):
    """Rank 0 fits 300, rank 1 only 200 (as when one GPU already holds more memory)."""

    @property
    def limit(self):
        return (300, 200)[self.global_rank]

    @limit.setter
    def limit(self, value):
        pass


class _RecordBatch(Callback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_start(self, trainer, pl_module):
        (self.folder / f"rank{trainer.global_rank}").write_text(str(pl_module.batch_size))


@pytest.mark.slow
def test_lightning_ddp_two_cpu_ranks_agree(tmp_path):
    model = _RankLimitModel(batch_size=8)
    cb = BatchSizeSearch(keep_global_batch=False, use_cache=False)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[cb, _RecordBatch(tmp_path)],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)
    sizes = [int((tmp_path / f"rank{r}").read_text()) for r in range(2)]
    assert sizes[0] == sizes[1] and 0.95 * 200 <= sizes[0] <= 200


def test_from_hydra_on_top_of_the_default_callbacks(tmp_path):
    from recipes.train import train
    from tests.helpers.cfg import compose_cfg, fast_overrides

    overrides = fast_overrides(
        "callbacks=[default,batch_size_search]", "data.batch_size=512", "trainer.limit_train_batches=2", "test=false",
        "callbacks.batch_size_search.max_memory_gb=0.004", f"callbacks.batch_size_search.cache_dir={tmp_path / 'cache'}",
    )
    _, objects = train(compose_cfg("train", overrides, tmp_path))
    cb = next(c for c in objects["trainer"].callbacks if isinstance(c, BatchSizeSearch))
    found, batch = cb.result.batch_size, objects["datamodule"].batch_size
    assert 1 <= found < 512 and batch <= found  # 512 does not fit in 4 MiB on tiny_cnn 16x16
    assert batch * objects["trainer"].accumulate_grad_batches == 512  # global batch kept


def test_max_fit_line_says_what_fits_what_is_used_why_and_how_to_grow(tmp_path, caplog):
    model = HiddenLimitModel(limit=728, batch_size=4)  # batch 4 already fits: keep_global_batch keeps it
    cb = BatchSizeSearch(mode="max_fit", keep_global_batch=True, use_cache=False)
    with caplog.at_level("INFO"):
        _trainer(cb, tmp_path, steps=1).fit(model)
    line = next(r.getMessage() for r in caplog.records if "BatchSizeSearch(max_fit)" in r.getMessage())
    assert f"largest batch that fits: {cb.result.largest_fit}" in line and cb.result.largest_fit >= 700
    assert "using batch_size 4 (was 4)" in line and "already fits" in line
    assert "keep_global_batch=False" in line and model.batch_size == 4


def test_throughput_search_is_bounded_by_a_share_of_the_run_and_reports_the_saving(tmp_path, caplog):
    model = HiddenLimitModel(limit=4096, batch_size=16)
    cb = BatchSizeSearch(mode="throughput", init_batch_size=16, keep_global_batch=False, use_cache=False)
    with caplog.at_level("INFO"):
        _trainer(cb, tmp_path, steps=1).fit(model)  # a one-step run: searching cannot pay for itself
    assert cb.result.stopped == "time budget" and cb.result.num_trials == 1 and model.batch_size == 16
    assert cb.metrics["batch_size_search/expected_saving_s"] < 0  # the search cost more than it can save
    line = next(r.getMessage() for r in caplog.records if "BatchSizeSearch(throughput)" in r.getMessage())
    assert "stopped: time budget" in line and "expected saving" in line
    unbounded = BatchSizeSearch(mode="throughput", init_batch_size=16, keep_global_batch=False, use_cache=False,
                                max_search_share=None, max_trials=3)
    _trainer(unbounded, tmp_path, steps=1).fit(HiddenLimitModel(limit=4096, batch_size=16))
    assert unbounded.result.num_trials == 3
