"""PreemptionHandler: emergency save on a real signal, exact mid-epoch resume, DDP agreement, resume equivalence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Sampler, TensorDataset

from mlcost_pl.callbacks import PreemptionHandler, SpotCheckpoint
from mlcost_pl.checkpoint import resolve_checkpoint
from mlcost_pl.preemption.restart import PREEMPTED_EXIT_CODE
from tests.helpers.preempt_train import TinyMLP, run

ROOT = Path(__file__).resolve().parents[2]


class Recorder(Callback):
    """Records the first sample of every batch seen; sends ``signum`` to this process after step ``at_step``."""

    def __init__(self, at_step: int | None = None, signum: int = signal.SIGUSR1) -> None:
        self.seen, self.at_step, self.signum = [], at_step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append(batch[1].tolist())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)


class EveryOther(Sampler):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(list(range(0, self.n, 2)) + list(range(1, self.n, 2)))

    def __len__(self):
        return self.n


def test_on_by_default_next_to_spot_checkpoint(tmp_path):
    from hydra.utils import instantiate

    from tests.helpers.cfg import compose_cfg, fast_overrides

    for group in ("default", "spot"):
        cfg = compose_cfg("train", fast_overrides(f"callbacks={group}"), tmp_path)
        assert {"spot_checkpoint", "preemption"} <= set(cfg.callbacks)
        handler = instantiate(cfg.callbacks.preemption)
        assert isinstance(handler, PreemptionHandler) and handler.notice.signals == (signal.SIGTERM, signal.SIGUSR1)


def test_state_round_trip():
    a = PreemptionHandler()
    a.preemptions, a.seed = 2, 1234
    b = PreemptionHandler()
    assert "rng" not in a.state_dict()  # the RNG states are saved once per checkpoint, by SpotCheckpoint
    b.load_state_dict(a.state_dict())
    assert (b.preemptions, b.seed) == (2, 1234)
    b.load_state_dict({**a.state_dict(), "rng": {"torch": torch.get_rng_state()}})  # a checkpoint from before
    assert b._legacy_rng is not None
    b.load_state_dict({})  # an old checkpoint without our keys still loads
    assert b.preemptions == 0
    import pickle

    c = pickle.loads(pickle.dumps(a))  # ddp_spawn pickles the callbacks
    assert c.notice.signals == a.notice.signals and not c.notice.is_set() and c.seed == 1234


def _fit(tmp_path, loader_fn, recorder, exit_on_notice=False, epochs=2):
    """Fit (resuming automatically from ``tmp_path`` through SpotCheckpoint)."""
    L.seed_everything(0, verbose=False)
    handler = PreemptionHandler(signals=["SIGUSR1"], exit_on_notice=exit_on_notice)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[recorder, SpotCheckpoint(str(tmp_path)), handler],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu")
    model = TinyMLP()
    trainer.fit(model, train_dataloaders=loader_fn())
    return trainer, handler, model


def _data():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(40, 8, 8, generator=g), torch.arange(40) % 10)


def test_needs_a_spot_checkpoint(tmp_path):
    trainer = L.Trainer(max_steps=1, callbacks=[PreemptionHandler()], default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, accelerator="cpu")
    with pytest.raises(ValueError, match="PreemptionHandler needs a SpotCheckpoint"):
        trainer.fit(TinyMLP(), train_dataloaders=DataLoader(_data(), batch_size=8))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="watchers: unknown cloud"):
        PreemptionHandler(watchers=["ibm"])
    with pytest.raises(ValueError, match="check_every_n_steps"):
        PreemptionHandler(check_every_n_steps=0)
    with pytest.raises(ValueError, match="unknown signal"):
        PreemptionHandler(signals=["SIGNOPE"])
    for kwargs, name in [({"poll_seconds": "5"}, "poll_seconds"), ({"check_every_n_steps": 2.5}, "check_every_n_steps"),
                         ({"grace_seconds": 0}, "grace_seconds"), ({"exact_resume": "no"}, "exact_resume"),
                         ({"exit_on_notice": 1}, "exit_on_notice"), ({"metadata_url": "ftp://x"}, "metadata_url")]:
        with pytest.raises(ValueError, match=name) as info:
            PreemptionHandler(**kwargs)
        assert "base_url" not in str(info.value), info.value


def test_signal_saves_at_the_step_and_resume_sees_exactly_the_remaining_batches(tmp_path):
    loader = lambda: DataLoader(_data(), batch_size=4, shuffle=True)  # noqa: E731 - 10 batches/epoch
    _, _, ref_model = _fit(tmp_path / "ref", loader, ref := Recorder())
    trainer, handler, _ = _fit(tmp_path / "a", loader, first := Recorder(at_step=13))  # mid-epoch 2
    assert trainer.global_step == 13 and handler.preemptions == 1 and handler.last_save_seconds > 0
    assert torch.load(resolve_checkpoint(handler.last_checkpoint), weights_only=False)["global_step"] == 13
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer, handler, model = _fit(tmp_path / "a", loader, rest := Recorder())
    assert not [r for r in record if "not resumable" in str(r.message)]  # Lightning's warning is moot here
    assert first.seen + rest.seen == ref.seen and len(ref.seen) == 20
    assert handler.preemptions == 1  # kept across the resume
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_unsupported_loader_restarts_the_epoch_and_warns_once(tmp_path):
    loader = lambda: DataLoader(_data(), batch_size=4, sampler=EveryOther(40))  # noqa: E731
    trainer, handler, _ = _fit(tmp_path, loader, first := Recorder(at_step=3), epochs=1)
    assert trainer.global_step == 3
    with pytest.warns(UserWarning, match="exact mid-epoch resume is not possible.*EveryOther is not one of") as record:
        trainer, _, _ = _fit(tmp_path, loader, rest := Recorder(), epochs=1)
    assert sum("exact mid-epoch resume" in str(r.message) for r in record) == 1
    assert rest.seen[:3] == first.seen and len(rest.seen) == 10  # the whole epoch again, from its first batch


def _spawn(d: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.helpers.preempt_train", "--dir", str(d), "--step-sleep", "0.05", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _progress(path: Path) -> tuple[int, int]:
    try:
        step, pid = path.read_text().split()
        return int(step), int(pid)
    except (FileNotFoundError, ValueError):
        return -1, -1


def _interrupt(d: Path, at_step: int, sig: int, expect_rc: int, timeout: float = 240) -> str:
    (d / "progress").unlink(missing_ok=True)  # only this child's progress counts
    proc = _spawn(d)
    try:
        end = time.monotonic() + timeout
        while _progress(d / "progress")[0] < at_step and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == expect_rc, out[-3000:]
    return out


def _resume_equivalence(tmp_path: Path, plan: list[tuple[int, int]]) -> None:
    reference = run(str(tmp_path / "ref"))  # uninterrupted, same seed, in-process
    d = tmp_path / "run"
    for at_step, sig in plan:
        rc = PREEMPTED_EXIT_CODE if sig == signal.SIGTERM else -sig
        out = _interrupt(d, at_step, sig, rc)
        if sig == signal.SIGTERM:
            assert "emergency checkpoint at step" in out
    final = subprocess.run([sys.executable, "-m", "tests.helpers.preempt_train", "--dir", str(d)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-3000:]
    params = torch.load(d / "final.pt")
    assert params.keys() == reference.keys()
    for k in reference:
        assert torch.equal(params[k], reference[k]), k


@pytest.mark.timeout(1200)  # three fresh interpreters importing Lightning: ~60 s idle, several minutes on a busy box
def test_resume_equivalence_sigterm_then_sigkill(tmp_path):
    """Headline: SIGTERM mid-epoch (emergency save), SIGKILL between checkpoints, resume: bitwise-equal parameters."""
    _resume_equivalence(tmp_path, [(7, signal.SIGTERM), (18, signal.SIGKILL)])


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_resume_equivalence_many_random_kills(tmp_path):
    import random

    rng = random.Random(1234)
    steps = sorted(rng.sample(range(2, 34), 5))
    plan = [(s, rng.choice([signal.SIGTERM, signal.SIGKILL])) for s in steps]
    _resume_equivalence(tmp_path, plan)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ddp_notice_on_one_rank_saves_all_ranks_at_the_same_step(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.preempt_train", "--dir", str(tmp_path), "--devices", "2",
                             "--step-sleep", "0.05", "--max-epochs", "20"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 300
        while _progress(tmp_path / "progress-rank1")[0] < 3 and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.02)
        step, pid = _progress(tmp_path / "progress-rank1")
        assert step >= 3, "rank 1 never trained"
        os.kill(pid, signal.SIGUSR1)  # the notice reaches rank 1 only
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == PREEMPTED_EXIT_CODE, out[-3000:]
    s0 = (tmp_path / "preempted-rank0").read_text()
    assert s0 == (tmp_path / "preempted-rank1").read_text()
    assert int(s0) % 2 == 0  # check_every_n_steps=2
    ckpt = torch.load(resolve_checkpoint(str(tmp_path / "ckpt")), weights_only=False)
    assert ckpt["global_step"] == int(s0)


class ValMLP(TinyMLP):
    """TinyMLP (dropout) with a validation loop: validation draws from the global RNG (its loader's base seed)."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(x), y))


class AtBatch(Recorder):
    """Records batches; sends the notice after the ``at_batch``-th micro-batch (steps repeat under accumulation)."""

    def __init__(self, at_batch: int | None = None) -> None:
        super().__init__()
        self.at_batch = at_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if len(self.seen) == self.at_batch:
            os.kill(os.getpid(), signal.SIGUSR1)


def _fit_with(tmp_path, recorder, model_cls=TinyMLP, spot_kw=None, epochs=2, **trainer_kw):
    L.seed_everything(0, verbose=False)
    handler = PreemptionHandler(signals=["SIGUSR1"], exit_on_notice=False)
    spot = SpotCheckpoint(str(tmp_path), **(spot_kw or {}))
    trainer = L.Trainer(max_epochs=epochs, callbacks=[recorder, spot, handler], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", **trainer_kw)
    model = model_cls()
    g = torch.Generator().manual_seed(2)
    val = TensorDataset(torch.randn(12, 8, 8, generator=g), torch.arange(12) % 10)
    trainer.fit(model, train_dataloaders=DataLoader(_data(), batch_size=4, shuffle=True),
                val_dataloaders=DataLoader(val, batch_size=4) if "val_check_interval" in trainer_kw else None)
    return trainer, spot, model


def _assert_same(ref_model, model):
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


# Mid accumulation window (batches 4-6 / 7-9 form a window).
@pytest.mark.parametrize("at_batch", [5, pytest.param(8, marks=pytest.mark.slow)])
def test_exact_resume_with_gradient_accumulation(tmp_path, at_batch):
    """accumulate_grad_batches=3: the notice lands mid-window; the save waits for the window's optimizer step, so
    the resumed run sees the remaining batches and ends bitwise equal. Also time-triggered saves (every_seconds)
    must only land at window boundaries."""
    kw = {"accumulate_grad_batches": 3, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    spot_kw = {"every_seconds": 1e-6}  # a time trigger due at every batch
    _, _, ref_model = _fit_with(tmp_path / "ref", ref := Recorder(), spot_kw=spot_kw, **kw)
    trainer, spot, _ = _fit_with(tmp_path / "a", first := AtBatch(at_batch), spot_kw=spot_kw, **kw)
    assert len(first.seen) % 3 == 0  # stopped at the end of a window, not at the notice
    _, spot, model = _fit_with(tmp_path / "a", rest := Recorder(), spot_kw=spot_kw, **kw)
    assert spot.resumed_from is not None
    assert first.seen + rest.seen == ref.seen
    _assert_same(ref_model, model)


# At the epoch end (validation, then a new epoch's iterator), just at a mid-epoch validation, after one.
@pytest.mark.parametrize("at_batch", [10, pytest.param(5, marks=pytest.mark.slow), pytest.param(15, marks=pytest.mark.slow)])
def test_exact_resume_across_validation_with_dropout(tmp_path, at_batch):
    """val_check_interval=0.5 with dropout: a notice near a validation (or the epoch end) still resumes bitwise."""
    kw = {"val_check_interval": 0.5, "num_sanity_val_steps": 2}
    _, _, ref_model = _fit_with(tmp_path / "ref", ref := Recorder(), model_cls=ValMLP, **kw)
    _fit_with(tmp_path / "a", first := AtBatch(at_batch), model_cls=ValMLP, **kw)
    _, spot, model = _fit_with(tmp_path / "a", rest := Recorder(), model_cls=ValMLP, **kw)
    assert spot.resumed_from is not None
    assert first.seen + rest.seen == ref.seen
    _assert_same(ref_model, model)
