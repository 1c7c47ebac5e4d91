"""SLURM set-up, run for real through hydra-submitit-launcher's local executor (2 tasks on this machine, gloo, CPU).

The job is a Hydra multirun of recipes.train with ``hydra/launcher=local_spot`` (submitit_local, tasks_per_node=2):
submitit starts two task processes; their world reaches Lightning through submitit's TorchDistributedEnvironment. SIGUSR2
(the signal submitit asks SLURM to send before the time limit) to both tasks makes them write one emergency
checkpoint at the same step and exit 75; re-submitting the same command (what ``scontrol requeue`` does on SLURM)
resumes from that step. Lightning's SLURM auto-requeue is off in trainer=ddp_multinode (unit-tested below).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlcost_pl.distributed.launcher import requeue_on_preemption, slurm_requeue_command
from mlcost_pl.preemption.restart import PREEMPTED_EXIT_CODE
from tests.helpers.runif import RunIf
from tests.helpers.step_log import read_log

ROOT = Path(__file__).resolve().parents[2]


def _rows(tmp: Path) -> list[dict]:
    return sorted((r for p in tmp.glob("steps.jsonl*") for r in read_log(p)), key=lambda r: r["t"])


def _launch(tmp: Path, max_epochs: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "recipes.train", "-m", "hydra/launcher=local_spot", "hydra.launcher.timeout_min=20",
        "trainer=ddp_multinode", "trainer.accelerator=cpu", "experiment=digits_fast", "+global_batch_size=128",
        f"trainer.max_epochs={max_epochs}", "trainer.enable_progress_bar=false", "callbacks.lr_monitor=null", "test=false",
        f"paths.log_dir={tmp / 'out'}", "callbacks.spot_checkpoint.every_n_steps=1000", "callbacks.spot_checkpoint.every_seconds=null",
        "callbacks.preemption.signals=[SIGTERM,SIGUSR2]", "callbacks.preemption.check_every_n_steps=1",
        "+callbacks.step_log._target_=tests.helpers.step_log.StepLog", f"+callbacks.step_log.path={tmp / 'steps.jsonl'}",
        "+callbacks.step_log.step_sleep=0.2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(tmp / f"launcher-{max_epochs}.out", "w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
@pytest.mark.timeout(900)
@RunIf(linux=True)
def test_submitit_local_two_tasks_usr2_saves_and_resubmission_resumes(tmp_path):
    launcher = _launch(tmp_path, max_epochs=30)
    try:
        deadline = time.monotonic() + 400
        while not any(r["world"] == 2 and r["step"] >= 4 for r in _rows(tmp_path)):
            assert launcher.poll() is None, (tmp_path / "launcher-30.out").read_text()[-3000:]
            assert time.monotonic() < deadline, "the 2-task job did not start training"
            time.sleep(0.5)
        pids = {r["rank"]: r["pid"] for r in _rows(tmp_path)}
        assert sorted(pids) == [0, 1]
        for pid in pids.values():
            os.kill(pid, signal.SIGUSR2)  # SLURM sends --signal=USR2@delay to every task
        launcher.wait(300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    logs = "".join(p.read_text() for p in (tmp_path / "out").rglob("*_log.*"))
    assert "emergency checkpoint at step" in logs, logs[-3000:]
    assert "signal SIGUSR2" in logs
    saved = max(r["step"] for r in _rows(tmp_path))

    # resubmission (SLURM: scontrol requeue) resumes from the emergency checkpoint, with both tasks
    again = _launch(tmp_path, max_epochs=1 + saved // 10)
    assert again.wait(600) == 0, (tmp_path / f"launcher-{1 + saved // 10}.out").read_text()[-3000:]
    starts = [r for r in _rows(tmp_path) if r["event"] == "start" and r["rank"] == 0]
    assert len(starts) == 2 and starts[1]["step"] >= saved and starts[1]["world"] == 2


def test_requeue_command_runs_on_rank_zero_of_a_preempted_slurm_job(monkeypatch):
    assert slurm_requeue_command({"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "9", "SLURM_PROCID": "0"}) == [
        "scontrol", "requeue", "7_3"]
    assert slurm_requeue_command({}) is None
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_PROCID", "0")
    ran = []
    with pytest.raises(SystemExit) as info, requeue_on_preemption(run=lambda cmd, **kw: ran.append(cmd), log=lambda m: None):
        sys.exit(PREEMPTED_EXIT_CODE)
    assert info.value.code == PREEMPTED_EXIT_CODE and ran == [["scontrol", "requeue", "42"]]
    with pytest.raises(SystemExit), requeue_on_preemption(run=lambda cmd, **kw: ran.append(cmd), log=lambda m: None):
        sys.exit(1)  # a crash is not requeued
    assert len(ran) == 1


def test_lightning_slurm_auto_requeue_is_off_under_slurm(monkeypatch):
    from lightning.fabric.plugins.environments import SLURMEnvironment

    from mlcost_pl.distributed import CompressedDDPStrategy

    for key, value in {"SLURM_NTASKS": "2", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                       "SLURM_NODEID": "0", "SLURM_NODELIST": "n1", "SLURM_NTASKS_PER_NODE": "2"}.items():
        monkeypatch.setenv(key, value)
    env = CompressedDDPStrategy().cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False
    assert CompressedDDPStrategy(slurm_auto_requeue=True).cluster_environment.auto_requeue is True
