"""Driver for the SIGKILL test: imports only torch and mlcost_pl.checkpoint, then forks save-loop children on demand.

Protocol: prints ``ready``; for each line on stdin it forks a child that resumes from the newest valid checkpoint in
``argv[1]`` and saves forever (keep_last=2), and prints the child's pid for the test to SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from mlcost_pl.checkpoint import CheckpointStorage, apply_retention, commit_checkpoint, find_latest_valid
from mlcost_pl.checkpoint.manifest import CKPT_FILE, serialize


def expected_tensor(step: int) -> torch.Tensor:
    return torch.randn(256, 1024, generator=torch.Generator().manual_seed(step))  # 1 MiB


def save_forever(url: str) -> None:
    store = CheckpointStorage(url)
    ref = find_latest_valid(store, on_skip=None)
    step = ref.global_step + 1 if ref else 1
    while True:
        state = {"step": step, "w": expected_tensor(step)}
        ref, _ = commit_checkpoint(store, {CKPT_FILE: serialize(state)}, step, {"reason": "kill-test"})
        apply_retention(store, 2, ref.name)
        step += 1


def main() -> None:
    assert "lightning" not in sys.modules, "the kill test must not import lightning"
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    print("ready", flush=True)
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                save_forever(sys.argv[1])
            finally:
                os._exit(1)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
