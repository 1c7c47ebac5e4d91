"""The contract every exported callback keeps (STYLE.md): it constructs, survives two fits through a resume, and its
state round-trips through a real checkpoint file loaded with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import lightning as L
import pytest
import torch

import mlcost_pl.callbacks as callbacks
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.models import ImageClassifier

# name -> factory(tmp_path) building the callback with the fewest arguments a user needs.
FACTORIES: dict[str, Callable[[Path], Any]] = {
    "SpotCheckpoint": lambda tmp: callbacks.SpotCheckpoint(str(tmp / "spot"), every_n_steps=3),
    "PreemptionHandler": lambda tmp: callbacks.PreemptionHandler(),
    "BatchSizeSearch": lambda tmp: callbacks.BatchSizeSearch(init_batch_size=8, max_batch_size=32, cache_dir=str(tmp / "bs")),
    "FreezeBackbone": lambda tmp: callbacks.FreezeBackbone("backbone", unfreeze_at=1),
    "CostMonitor": lambda tmp: callbacks.CostMonitor(usd_per_hour=1.0, ledger=str(tmp / "ledger.sqlite")),
    "ExtendSchedule": lambda tmp: callbacks.ExtendSchedule(max_epochs=2),
    "StoreConfig": lambda tmp: callbacks.StoreConfig({"model": {"backbone": "tiny_cnn"}, "data": {}}),
}


def test_every_exported_callback_has_a_contract_case():
    assert sorted(FACTORIES) == sorted(callbacks.__all__)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _fit(tmp_path: Path, cbs: list[Any], max_epochs: int) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    dm = DigitsDataModule(image_size=8, batch_size=32, classes=[0, 1, 2])
    model = ImageClassifier("tiny_cnn", num_classes=dm.num_classes, in_channels=1)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, limit_train_batches=4, limit_val_batches=1,
        callbacks=cbs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    return trainer


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_construct_fit_twice_and_round_trip_state(name, tmp_path):
    def build() -> list[Any]:
        cb = FACTORIES[name](tmp_path)
        # PreemptionHandler saves through a SpotCheckpoint; every other callback also runs next to one, as by default.
        spot = [] if name == "SpotCheckpoint" else [callbacks.SpotCheckpoint(str(tmp_path / "spot"), every_n_steps=3)]
        return [cb, *spot]

    first = build()
    trainer = _fit(tmp_path, first, max_epochs=1)
    steps_first = trainer.global_step  # BatchSizeSearch may trade batch size for gradient accumulation
    assert trainer.current_epoch == 1 and steps_first > 0
    second = build()  # a new process would build new instances: the second fit resumes and trains one more epoch
    trainer = _fit(tmp_path, second, max_epochs=2)
    assert trainer.current_epoch == 2 and trainer.global_step == 2 * steps_first
    spot = next(c for c in second if isinstance(c, callbacks.SpotCheckpoint))
    assert spot.resumed_from is not None and f"step-{steps_first:09d}" in spot.resumed_from

    # The state goes through a real checkpoint file, loaded as Lightning does by default for untrusted files.
    cb = second[0]
    state = cb.state_dict()
    buf = io.BytesIO()
    torch.save({"state": state}, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["state"]
    fresh = FACTORIES[name](tmp_path)
    fresh.load_state_dict(loaded)
    assert _equal(fresh.state_dict(), state)
    assert isinstance(cb.state_key, str) and cb.state_key
