"""SIGKILL at random moments during saves never leaves a checkpoint that resume would load and that fails to verify."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from mlcost_pl.checkpoint import CheckpointStorage, find_latest_valid, verify
from mlcost_pl.checkpoint.manifest import MANIFEST, list_checkpoints, load_bytes
from tests.checkpoint._kill_saver import expected_tensor

REPO = Path(__file__).resolve().parents[2]
KILLS = 24


def _gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.005)
    raise AssertionError(f"child {pid} survived SIGKILL")


def test_sigkill_during_saves_never_exposes_a_bad_checkpoint(tmp_path):
    url = str(tmp_path / "ckpts")
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.checkpoint._kill_saver", url],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
    )
    rng = random.Random(1234)
    store = CheckpointStorage(url)
    steps, torn, skipped = [], 0, []
    try:
        assert driver.stdout.readline().strip() == "ready"
        for _ in range(KILLS):
            driver.stdin.write("fork\n")
            pid = int(driver.stdout.readline())
            time.sleep(rng.uniform(0.05, 0.5))
            os.kill(pid, signal.SIGKILL)
            _gone(pid)
            names = list_checkpoints(store)
            torn += any(not store.exists(f"{n}/{MANIFEST}") for n in names) or any(
                ".tmp-" in f for n in names for f in store.listdir(n)
            )
            ref = find_latest_valid(url, check_load=True, on_skip=skipped.append)
            if ref is None:
                assert not steps, "a committed checkpoint disappeared"
                continue
            manifest, data = verify(store, ref.name)  # what resume would load verifies ...
            state = load_bytes(data)  # ... loads ...
            assert state["step"] == ref.global_step == manifest["global_step"]
            assert torch.equal(state["w"], expected_tensor(ref.global_step))  # ... and holds what was saved
            assert not steps or ref.global_step >= steps[-1], "resume went backwards"
            steps.append(ref.global_step)
    finally:
        driver.kill()
        driver.wait(10)
    assert len(steps) >= KILLS - 2 and steps[-1] >= KILLS // 2, f"the save loop made too little progress: {steps}"
    assert torn >= 1, "no kill landed inside a save; the test did not exercise the race"
