"""recipes.train with the default callbacks: SpotCheckpoint is on, and re-running the same run resumes it."""

from __future__ import annotations

from mlcost_pl.callbacks import SpotCheckpoint
from recipes.train import train
from tests.helpers.cfg import compose_cfg, fast_overrides


def _spot(objects) -> SpotCheckpoint:
    return next(c for c in objects["trainer"].callbacks if isinstance(c, SpotCheckpoint))


def test_recipe_rerun_resumes(tmp_path):
    cfg = compose_cfg("train", fast_overrides("test=false", "logger=none", "callbacks=spot"), tmp_path)
    _, first = train(cfg)
    spot = _spot(first)
    assert spot.dirpath == str(tmp_path / "run" / "checkpoints") and spot.resumed_from is None
    assert first["trainer"].global_step == 4 and spot.checkpoints_committed == 1
    assert not first["trainer"].checkpoint_callbacks  # Lightning's ModelCheckpoint is off: one copy only

    # the machine "died" after epoch 1; the same run, extended to 2 epochs, resumes at step 4
    cfg = compose_cfg("train", fast_overrides("test=false", "logger=none", "callbacks=spot", "extend_to_epochs=2"), tmp_path)
    _, second = train(cfg)
    assert "step-000000004" in _spot(second).resumed_from
    assert second["trainer"].global_step == 8


def test_spot_checkpoint_is_on_by_default(tmp_path):
    cfg = compose_cfg("train", fast_overrides(), tmp_path)
    assert cfg.callbacks.spot_checkpoint.async_save and cfg.trainer.enable_checkpointing is False


def test_callbacks_spot_preset(tmp_path):
    cfg = compose_cfg("train", fast_overrides("callbacks=spot", "callbacks.spot_checkpoint.every_n_steps=2"), tmp_path)
    assert cfg.callbacks.spot_checkpoint._target_ == "mlcost_pl.callbacks.SpotCheckpoint"
    assert "lr_monitor" not in cfg.callbacks
