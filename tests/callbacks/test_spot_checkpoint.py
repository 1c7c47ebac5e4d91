"""SpotCheckpoint on a real CPU Trainer: saves, automatic resume, fallback, explicit ckpt_path, async, errors, S3."""

from __future__ import annotations

import uuid
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mlcost_pl.callbacks import SpotCheckpoint
from mlcost_pl.checkpoint import CheckpointDirError, CheckpointStorage, CheckpointWriteError, find_latest_valid
from mlcost_pl.checkpoint.manifest import CKPT_FILE, MANIFEST, list_checkpoints, load_bytes
from tests.helpers.runif import RunIf


class TinyModel(L.LightningModule):
    """Linear + dropout (so RNG state matters), SGD with momentum, a StepLR schedule; 16 fixed samples.

    The loader has its own generator, so only dropout draws from the global RNG that SpotCheckpoint restores.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 2))
        self.seen_steps = 0

    def training_step(self, batch, batch_idx):
        self.seen_steps += 1
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)}

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(16, 8, generator=g), torch.randint(0, 2, (16,), generator=g))
        return DataLoader(data, batch_size=4, shuffle=False, generator=torch.Generator().manual_seed(0))


class RecordingLogger(Logger):
    """A real (in-memory) Lightning logger that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.rows.append((step, dict(metrics)))

    def values(self, key: str) -> list[float]:
        return [m[key] for _, m in self.rows if key in m]


def _trainer(spot: SpotCheckpoint | None, logger: Logger | bool = False, **kw: Any) -> L.Trainer:
    kw.setdefault("max_epochs", 2)
    kw.setdefault("accelerator", "cpu")
    return L.Trainer(
        callbacks=[spot] if spot else [],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        **kw,
    )


def _fit(dirpath: str, seed: int = 1, **kw: Any) -> tuple[L.Trainer, SpotCheckpoint, TinyModel]:
    spot_kw = {k: kw.pop(k) for k in list(kw) if k in ("every_n_steps", "every_seconds", "keep_last", "async_save", "storage_options", "resume", "retries", "backoff_s")}
    ckpt_path = kw.pop("ckpt_path", None)
    L.seed_everything(seed, verbose=False)
    spot = SpotCheckpoint(dirpath, **spot_kw)
    model = TinyModel()
    trainer = _trainer(spot, **kw)
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, spot, model


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"every_n_steps": -5}, "every_n_steps"),
        ({"every_seconds": 0}, "every_seconds"),
        ({"every_seconds": -1.0}, "every_seconds"),
        ({"every_seconds": "sometimes"}, "every_seconds"),
        ({"keep_last": 0}, "keep_last"),
        ({"mtbf_seconds": 0}, "mtbf_seconds"),
        ({"on_busy": "panic"}, "on_busy"),
        ({"every_n_steps": 2.5}, "every_n_steps"),
        ({"every_seconds": "60"}, "every_seconds"),
        ({"keep_last": True}, "keep_last"),
        ({"async_save": "yes"}, "async_save"),
        ({"progress_every_seconds": "30"}, "progress_every_seconds"),
        ({"retries": -1}, "retries"),
        ({"backoff_s": "0.5"}, "backoff_s"),
        ({"storage_options": "anon=true"}, "storage_options"),
    ],
)
def test_bad_arguments_name_themselves(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        SpotCheckpoint(str(tmp_path), **kwargs)


def test_resume_from_a_moved_folder_keeps_callback_state_and_rng(tmp_path):
    """The state key is not the folder: moving (or re-mounting) it must not drop totals and the RNG states."""
    import shutil

    _, first, _ = _fit(str(tmp_path / "a"), every_n_steps=2, max_epochs=1)
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    with warnings_as_errors("Please add the following callbacks"):
        _, spot, _ = _fit(str(tmp_path / "b"), every_n_steps=2, max_epochs=2)
    assert spot.resumed_from is not None and spot.loaded_rng_states is not None
    assert spot.checkpoints_committed == first.checkpoints_committed + 2


def test_old_keys_are_claimed_and_unclaimed_state_warns(tmp_path):
    """A checkpoint written with the old folder-based key still resumes; Lightning's warning names only what no
    callback claims (before, it also named our own state under its old key, and that state was dropped)."""
    _fit(str(tmp_path / "ck"), every_n_steps=2, max_epochs=1)
    store = CheckpointStorage(str(tmp_path / "ck"))
    name = list_checkpoints(store)[0]
    ckpt = load_bytes(store.read(f"{name}/{CKPT_FILE}"))
    callbacks = ckpt["callbacks"]
    callbacks["SpotCheckpoint{'dirpath': '/somewhere/else'}"] = callbacks.pop("SpotCheckpoint")
    callbacks["ModelCheckpoint{'monitor': None}"] = {"best_model_path": "x"}
    path = tmp_path / "old.ckpt"
    torch.save(ckpt, path)
    with pytest.warns(UserWarning, match=r"Please add the following callbacks: \[\"ModelCheckpoint\{'monitor': None\}\"\]") as record:
        _, spot, _ = _fit(str(tmp_path / "other"), every_n_steps=2, max_epochs=2, ckpt_path=str(path))
    assert spot.loaded_rng_states is not None and spot.checkpoints_committed >= 1
    assert not any("SpotCheckpoint{" in str(r.message) for r in record), [str(r.message) for r in record]


class warnings_as_errors:
    """Fail if a warning matching ``text`` is emitted inside the block."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.record = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        hits = [str(r.message) for r in self.record if self.text in str(r.message)]
        assert not hits, hits


def test_unwritable_dirpath_fails_at_fit_start_before_training(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    model = TinyModel()
    with pytest.raises(CheckpointDirError, match=r"not-a-dir/ckpts is not writable: \w+Error") as info:
        _trainer(SpotCheckpoint(str(blocker / "ckpts"), every_n_steps=2)).fit(model)
    assert "\n" not in str(info.value) and model.seen_steps == 0


def test_saves_by_steps_commits_prunes_and_logs(tmp_path):
    logger = RecordingLogger()
    trainer, spot, _ = _fit(str(tmp_path / "ck"), every_n_steps=2, keep_last=2, logger=logger)
    store = CheckpointStorage(str(tmp_path / "ck"))
    names = list_checkpoints(store)
    assert [int(n.split("-")[1]) for n in names] == [8, 6]  # steps 2, 4, 6, 8 saved; fit end == step 8, not repeated
    assert spot.checkpoints_committed == 4 and spot.resumed_from is None
    assert logger.values("checkpoint/committed_total") == [1.0, 2.0, 3.0, 4.0]
    assert len(logger.values("checkpoint/blocked_s")) == 4 and all(v > 0 for v in logger.values("checkpoint/blocked_s"))
    assert all(v > 1000 for v in logger.values("checkpoint/written_bytes"))
    assert spot.blocked_seconds_total == pytest.approx(sum(logger.values("checkpoint/blocked_s")))
    assert spot.last_save_seconds > 0 and spot.dirpath == str(tmp_path / "ck")


def test_resume_restores_everything_and_matches_an_uninterrupted_run(tmp_path):
    _, _, straight = _fit(str(tmp_path / "a"), every_n_steps=3, max_epochs=4)
    _fit(str(tmp_path / "b"), every_n_steps=3, max_epochs=2)
    trainer, spot, resumed = _fit(str(tmp_path / "b"), seed=123, every_n_steps=4, max_epochs=4)  # different seed: RNG restored
    assert spot.resumed_from and spot.resumed_from.endswith(CKPT_FILE) and "step-000000008" in spot.resumed_from
    assert trainer.global_step == 16 and resumed.seen_steps == 8
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 4  # stepped per epoch: 2 restored + 2
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert spot.lost_steps_total == 0


def test_corrupt_newest_falls_back_with_a_warning_naming_it(tmp_path):
    d = str(tmp_path / "ck")
    _fit(d, every_n_steps=2, keep_last=3, max_epochs=1)  # steps 2, 4
    store = CheckpointStorage(d)
    newest = list_checkpoints(store)[0]
    path = tmp_path / "ck" / newest / CKPT_FILE
    path.write_bytes(path.read_bytes()[:-50])  # truncated after commit
    with pytest.warns(UserWarning, match=newest):
        trainer, spot, model = _fit(d, every_n_steps=2, max_epochs=1)
    assert "step-000000002" in spot.resumed_from and model.seen_steps == 2
    assert spot.lost_steps_total == 2  # steps 3-4 had run before, and were done again


def test_explicit_ckpt_path_wins(tmp_path):
    _fit(str(tmp_path / "ck"), every_n_steps=2, keep_last=5, max_epochs=1)
    store = CheckpointStorage(str(tmp_path / "ck"))
    oldest = list_checkpoints(store)[-1]
    trainer, spot, model = _fit(str(tmp_path / "ck"), every_n_steps=2, max_epochs=1, ckpt_path=str(tmp_path / "ck" / oldest / CKPT_FILE))
    assert spot.resumed_from is None and model.seen_steps == 2  # resumed at step 2 of 4, not at the newest (4)


def test_resume_false_starts_fresh(tmp_path):
    _fit(str(tmp_path / "ck"), every_n_steps=2, max_epochs=1)
    _, spot, model = _fit(str(tmp_path / "ck"), every_n_steps=2, max_epochs=1, resume=False)
    assert spot.resumed_from is None and model.seen_steps == 4


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}/{i}"))
        return out
    return {prefix: obj}


def test_async_and_sync_write_identical_contents(tmp_path):
    contents = {}
    for mode in (False, True):
        d = str(tmp_path / f"async={mode}")
        _, spot, _ = _fit(d, every_n_steps=3, keep_last=10, async_save=mode, max_epochs=1)
        store = CheckpointStorage(d)
        contents[mode] = [load_bytes(store.read(f"{n}/{CKPT_FILE}")) for n in reversed(list_checkpoints(store))]
    assert len(contents[False]) == len(contents[True]) == 2  # step 3, fit end at 4
    for sync_ckpt, async_ckpt in zip(contents[False], contents[True]):
        a = {k.replace("async=False", "X"): v for k, v in _flatten(sync_ckpt).items()}
        b = {k.replace("async=True", "X"): v for k, v in _flatten(async_ckpt).items()}
        assert a.keys() == b.keys()
        for key in a:
            if "blocked_seconds_total" in key or "save_cost_s" in key or "bytes_written_total" in key:
                continue  # timings differ by design
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


def test_async_background_error_is_retried_then_raised(tmp_path):
    d = tmp_path / "ck"
    L.seed_everything(0, verbose=False)
    spot = SpotCheckpoint(str(d), every_n_steps=1, async_save=True, retries=1, backoff_s=0.01, on_busy="wait")

    class BreakStorage(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 1:  # after one good save, the directory becomes a file: writes fail for real
                spot._writer.wait()
                import shutil

                shutil.rmtree(d)
                d.write_text("in the way")

    trainer = L.Trainer(
        callbacks=[BreakStorage(), spot], logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, max_epochs=1, accelerator="cpu",
    )
    with pytest.warns(UserWarning, match="attempt 1"), pytest.raises(CheckpointWriteError, match="after 2 attempts"):
        trainer.fit(TinyModel())


def test_save_now_and_fit_twice_round_trip(tmp_path):
    """Contract test: construct, fit twice, round-trip state; save_now returns a committed, loadable checkpoint."""
    spot = SpotCheckpoint(str(tmp_path / "ck"), every_n_steps=2, async_save=True)
    model = TinyModel()
    trainer = _trainer(spot, max_epochs=1)
    trainer.fit(model)
    url = spot.save_now(trainer, reason="budget")
    ref = find_latest_valid(str(tmp_path / "ck"))
    assert ref.file_url == url and ref.manifest["reason"] == "budget"
    assert torch.load(url, weights_only=False)["global_step"] == 4
    trainer2 = _trainer(spot, max_epochs=2)
    trainer2.fit(TinyModel())
    assert trainer2.global_step == 8 and spot.resumed_from is not None
    state = spot.state_dict()
    other = SpotCheckpoint(str(tmp_path / "ck"))
    other.load_state_dict(state)
    assert other.blocked_seconds_total == spot.blocked_seconds_total and other.checkpoints_committed == spot.checkpoints_committed
    assert other.lost_steps_total == spot.lost_steps_total


def test_boring_model_from_lightning(tmp_path):
    from lightning.pytorch.demos.boring_classes import BoringModel

    d = f"memory://spot-{uuid.uuid4().hex}"
    spot = SpotCheckpoint(d, every_n_steps=3)
    _trainer(spot, max_steps=5, limit_val_batches=0).fit(BoringModel())
    spot2 = SpotCheckpoint(d, every_n_steps=3)
    trainer = _trainer(spot2, max_steps=8, limit_val_batches=0)
    trainer.fit(BoringModel())
    assert "step-000000005" in spot2.resumed_from and trainer.global_step == 8


def test_s3_resume_and_retention(tmp_path, s3_server):
    d = f"{s3_server['bucket']}/{uuid.uuid4().hex}/run"
    opts = s3_server["storage_options"]
    _fit(d, every_n_steps=2, keep_last=2, max_epochs=1, storage_options=opts, async_save=True)
    store = CheckpointStorage(d, opts)
    assert [int(n.split("-")[1]) for n in list_checkpoints(store)] == [4, 2]
    store.write_atomic("keep-me.txt", b"x")
    trainer, spot, model = _fit(d, every_n_steps=2, keep_last=2, max_epochs=2, storage_options=opts)
    assert "step-000000004" in spot.resumed_from and model.seen_steps == 4
    assert [int(n.split("-")[1]) for n in list_checkpoints(store)] == [8, 6]
    assert store.read("keep-me.txt") == b"x" and store.exists(f"{list_checkpoints(store)[0]}/{MANIFEST}")


def test_every_seconds_auto_measures_and_announces(tmp_path, capsys):
    logger = RecordingLogger()
    trainer, spot, _ = _fit(str(tmp_path / "ck"), every_seconds="auto", logger=logger, max_epochs=1)
    intervals = logger.values("checkpoint/interval_s")
    assert intervals and intervals[0] > 0
    # first save at step 1 measured the cost; then sqrt(2 x cost x 6 h) is far longer than this fit
    assert [int(n.split("-")[1]) for n in list_checkpoints(CheckpointStorage(str(tmp_path / "ck")))] == [4, 1]


@pytest.mark.gpu
@RunIf(cuda=True)
def test_cuda_async_snapshot_and_amp_scaler_resume(tmp_path):
    d = str(tmp_path / "ck")
    L.seed_everything(0, verbose=False)
    spot = SpotCheckpoint(d, every_n_steps=2, async_save=True)
    trainer = _trainer(spot, max_epochs=1, accelerator="gpu", devices=1, precision="16-mixed")
    trainer.fit(TinyModel())
    scale = trainer.precision_plugin.scaler.get_scale()
    saved = load_bytes(CheckpointStorage(d).read(f"{list_checkpoints(CheckpointStorage(d))[0]}/{CKPT_FILE}"))
    assert all(t.device.type == "cpu" for t in saved["state_dict"].values())
    spot2 = SpotCheckpoint(d, every_n_steps=2, async_save=True)
    trainer2 = _trainer(spot2, max_epochs=1, accelerator="gpu", devices=1, precision="16-mixed")
    trainer2.fit(TinyModel())  # nothing left to train: only the restore happens
    assert spot2.resumed_from is not None and trainer2.precision_plugin.scaler.get_scale() == scale
