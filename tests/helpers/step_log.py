"""StepLog: a test callback that appends one JSON line per event, so a parent process can follow a launched run.

Used by the multi-node tests through Hydra (``+callbacks.step_log._target_=tests.helpers.step_log.StepLog``): each rank
writes ``{"event": "start"|"step", "step", "rank", "world", "accum", "pid", "restart", "t"}`` to ``<path>`` (rank 0)
or ``<path>.rank<r>``; ``step_sleep`` slows each step so signals land mid-run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class StepLog(Callback):
    def __init__(self, path: str, step_sleep: float = 0.0) -> None:
        self.path = Path(path)
        self.step_sleep = float(step_sleep)

    def _write(self, trainer: Any, event: str) -> None:
        path = self.path if trainer.global_rank == 0 else self.path.with_name(f"{self.path.name}.rank{trainer.global_rank}")
        row = {
            "event": event,
            "step": int(trainer.global_step),
            "rank": int(trainer.global_rank),
            "world": int(trainer.world_size),
            "accum": int(trainer.accumulate_grad_batches),
            "pid": os.getpid(),
            "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
            "t": time.time(),
        }
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._write(trainer, "start")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.step_sleep:
            time.sleep(self.step_sleep)
        if not trainer.fit_loop.epoch_loop._should_accumulate():
            self._write(trainer, "step")


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows written so far (a half-written last line is ignored)."""
    rows = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows
