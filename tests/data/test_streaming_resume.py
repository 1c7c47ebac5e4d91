"""Exact mid-epoch resume of a streaming run: SpotCheckpoint + PreemptionHandler + litdata's StreamingDataLoader."""

from __future__ import annotations

import os
import signal
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from mlcost_pl.callbacks import PreemptionHandler, SpotCheckpoint
from mlcost_pl.checkpoint import resolve_checkpoint
from mlcost_pl.data.streaming import StreamingDataModule
from tests.helpers.preempt_train import TinyMLP


class Recorder(Callback):
    """Records every batch seen (its bytes); sends SIGUSR1 to this process after step ``at_step``."""

    def __init__(self, at_step: int | None = None) -> None:
        self.seen, self.at_step = [], at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((batch[0].numpy().tobytes(), batch[1].tolist()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGUSR1)


def _fit(ckpt_dir, uri, recorder, epochs=2):
    L.seed_everything(0, verbose=False)
    handler = PreemptionHandler(signals=["SIGUSR1"], exit_on_notice=False)
    trainer = L.Trainer(max_epochs=epochs, callbacks=[recorder, SpotCheckpoint(str(ckpt_dir)), handler], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu")
    model = TinyMLP()  # has dropout: the RNG state must be restored at the right batch too
    trainer.fit(model, datamodule=StreamingDataModule(uri, batch_size=32, shuffle=True, seed=3))
    return trainer, handler, model


def test_streaming_run_resumes_mid_epoch_at_the_exact_sample(tmp_path, digits_optimized):
    uri, manifest = digits_optimized
    per_epoch = -(-manifest.splits["train"].count // 32)  # 40 batches
    _, _, ref_model = _fit(tmp_path / "ref", uri, ref := Recorder())
    at = per_epoch + 7  # mid-epoch 2
    trainer, handler, _ = _fit(tmp_path / "a", uri, first := Recorder(at_step=at))
    assert trainer.global_step == at and handler.preemptions == 1
    saved = torch.load(resolve_checkpoint(handler.last_checkpoint), weights_only=False)
    assert saved["global_step"] == at and saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the stream's state
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer, handler, model = _fit(tmp_path / "a", uri, rest := Recorder())
    assert not [r for r in record if "exact mid-epoch resume is not possible" in str(r.message)]
    assert not [r for r in record if "not resumable" in str(r.message)]
    assert len(ref.seen) == 2 * per_epoch and ref.seen[:per_epoch] != ref.seen[per_epoch:]  # reshuffled per epoch
    assert first.seen + rest.seen == ref.seen  # not one sample repeated or skipped
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k  # bitwise: same batches, same dropout masks
