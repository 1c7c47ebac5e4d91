"""load_training_checkpoint: a recipes.train checkpoint back to model + data; bad checkpoints are one clear line."""

from __future__ import annotations

import torch

import pytest
from hydra.errors import InstantiationException

from mlcost_pl.config import CONFIG_KEY
from mlcost_pl.errors import UserInputError
from mlcost_pl.export import load_training_checkpoint
from mlcost_pl.export.checkpoint_io import untrusted_targets

CFG = {
    "model": {"_target_": "mlcost_pl.models.ImageClassifier", "backbone": "tiny_cnn", "num_classes": 10, "in_channels": 1,
              "weights": None, "weights_path": None, "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True}},
    "data": {"_target_": "mlcost_pl.data.DigitsDataModule", "image_size": 8, "channels": 1, "batch_size": 64},
}


def _ckpt(path, model, config=CFG):
    payload = {"state_dict": model.state_dict(), "epoch": 1}
    if config is not None:
        payload[CONFIG_KEY] = config
    torch.save(payload, path)
    return path


def test_round_trip_rebuilds_model_and_data(trained, tmp_path):
    model, _ = trained
    ckpt = load_training_checkpoint(str(_ckpt(tmp_path / "a.ckpt", model)), {"batch_size": 16})
    assert not ckpt.module.training and ckpt.datamodule.batch_size == 16
    x = torch.randn(3, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(ckpt.module(x), model.eval()(x))


def test_fsspec_url(trained, tmp_path):
    path = _ckpt(tmp_path / "a.ckpt", trained[0])
    assert load_training_checkpoint(f"file://{path}").module is not None


def test_bad_checkpoints_are_one_clear_line(trained, tmp_path):
    model, _ = trained
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*nope.ckpt: no such file"):
        load_training_checkpoint(str(tmp_path / "nope.ckpt"))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_training_checkpoint(str(tmp_path / "junk.ckpt"))
    with pytest.raises(ValueError, match=f"no training config stored under '{CONFIG_KEY}'"):
        load_training_checkpoint(str(_ckpt(tmp_path / "b.ckpt", model, config=None)))
    other = {**CFG, "model": {**CFG["model"], "backbone": "resnet18"}}
    with pytest.raises(ValueError, match="weights do not fit the stored model config"):
        load_training_checkpoint(str(_ckpt(tmp_path / "c.ckpt", model, config=other)))
    with pytest.raises(ValueError, match="is a directory"):
        load_training_checkpoint(str(tmp_path))


def test_spot_checkpoint_directory_uses_newest_verified(trained, tmp_path):
    import io

    from mlcost_pl.checkpoint import CheckpointStorage, commit_checkpoint

    model, _ = trained
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "epoch": 1, CONFIG_KEY: CFG}, buf)
    storage = CheckpointStorage(str(tmp_path / "spot"))
    commit_checkpoint(storage, {"checkpoint.ckpt": buf.getvalue()}, global_step=5)
    ckpt = load_training_checkpoint(str(tmp_path / "spot"))
    assert ckpt.url.endswith("checkpoint.ckpt") and "step-" in ckpt.url
    x = torch.randn(2, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(ckpt.module(x), model.eval()(x))


RAN: list[str] = []


def _record(what: str) -> str:
    RAN.append(what)
    return what


class Payload:
    """Unpickling this runs code (as any pickled object can): it calls ``_record``."""

    def __reduce__(self):
        return (_record, ("code ran",))


def test_a_checkpoint_that_needs_unpickling_is_refused_unless_trusted(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": model.state_dict(), CONFIG_KEY: CFG, "hyper_parameters": Payload()}, path)
    RAN.clear()
    with pytest.raises(UserInputError, match=r"safe loading .*weights_only=True.* export.trust_checkpoint=true"):
        load_training_checkpoint(str(path))
    assert RAN == []  # nothing in the file ran
    assert load_training_checkpoint(str(path), trust_checkpoint=True).module is not None
    assert RAN == ["code ran"]


def test_stored_targets_outside_the_allow_list_are_refused_unless_trusted(trained, tmp_path):
    model, _ = trained
    evil = {**CFG, "data": {**CFG["data"], "transform": {"_target_": "os.getcwd"}}}
    path = _ckpt(tmp_path / "t.ckpt", model, config=evil)
    with pytest.raises(UserInputError, match=r"outside mlcost_pl, torchvision, torch.nn \(data.transform._target_=os.getcwd\)"):
        load_training_checkpoint(str(path))
    assert untrusted_targets(CFG) == ["model.optimizer._target_=torch.optim.AdamW"]  # listed, but never built
    with pytest.raises(InstantiationException, match="unexpected keyword argument 'transform'"):
        load_training_checkpoint(str(path), trust_checkpoint=True)  # trusted: built (DigitsDataModule then rejects it)
