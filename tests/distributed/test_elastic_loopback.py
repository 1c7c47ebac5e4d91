"""Elastic spot training on loopback: two real torchrun agents on 127.0.0.1 (c10d rendezvous, gloo, CPU, 1 process each).

The non-host agent leaves on a SIGTERM notice (the survivors save: no step lost), a replacement joins (torchrun's
scale-up restart; the survivor saves first: no step lost), then the replacement's agent and worker are SIGKILLed by pid
(the survivor re-forms alone and resumes from the newest checkpoint: at most one checkpoint interval lost). Progress
never goes backwards and the global batch is kept (accumulation 1 on two ranks, 2 on one). Losing the agent that hosts
the rendezvous store fails cleanly, with a message, and leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.runif import RunIf
from tests.helpers.step_log import read_log

pytestmark = [pytest.mark.slow, RunIf(linux=True), pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
EVERY_N_STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Agent:
    """One torchrun agent (one "node") with one worker, its output in a file."""

    def __init__(self, tmp: Path, name: str, port: int, is_host: bool, max_epochs: int = 40) -> None:
        self.log = tmp / f"{name}.out"
        cmd = [
            sys.executable, "-m", "torch.distributed.run",
            "--nnodes=1:2", "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            "--rdzv-id=loopback", f"--rdzv-conf=is_host={int(is_host)},last_call_timeout=3,join_timeout=120",
            "--max-restarts=5", "--monitor-interval=1",
            "-m", "recipes.train",
            "trainer=ddp_multinode", "experiment=digits_fast", "+global_batch_size=128", f"trainer.max_epochs={max_epochs}",
            "trainer.enable_progress_bar=false", "callbacks.lr_monitor=null", "test=false", f"paths.log_dir={tmp / 'out'}",
            f"callbacks.spot_checkpoint.every_n_steps={EVERY_N_STEPS}", "callbacks.spot_checkpoint.every_seconds=null",
            "callbacks.spot_checkpoint.async_save=false", "callbacks.preemption.check_every_n_steps=1",
            "+callbacks.step_log._target_=tests.helpers.step_log.StepLog", f"+callbacks.step_log.path={tmp / 'steps.jsonl'}",
            "+callbacks.step_log.step_sleep=0.25",
        ]
        # A fresh MASTER_ADDR/PORT per rendezvous round: with the agent's shared TCP store, a node joining a running
        # group waits forever for a key the old rank 0 never re-publishes (docs/multinode.md, "Failure modes").
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def workers(self) -> list[int]:
        return _children(self.proc.pid)

    def kill_hard(self) -> list[int]:
        """SIGKILL the worker(s) and the agent, by pid (orphaned workers of a killed agent can hang)."""
        workers = self.workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(30)
        return workers

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            for pid in self.workers:
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(30)
        self._out.close()


def _rows(tmp: Path) -> list[dict]:
    rows = [r for p in tmp.glob("steps.jsonl*") for r in read_log(p)]
    return sorted(rows, key=lambda r: r["t"])


def _wait(tmp: Path, agents: list[Agent], what: str, pred, timeout: float = 300.0) -> list[dict]:
    """Poll the step logs until ``pred(rows)``; fail early when one of ``agents`` (those that must live) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _rows(tmp)
        if pred(rows):
            return rows
        for a in agents:
            if a.proc.poll() is not None and a.proc.returncode != 0:
                pytest.fail(f"{a.log.name} exited {a.proc.returncode} while waiting for {what}:\n{a.output()[-4000:]}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last rows {_rows(tmp)[-3:]}\n" + "\n".join(a.output()[-3000:] for a in agents))


def _starts(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["event"] == "start" and r["rank"] == 0]


def _max_step(rows: list[dict]) -> int:
    return max((r["step"] for r in rows if r["event"] == "step"), default=0)


def test_elastic_leave_join_and_kill_on_loopback(tmp_path):
    port = _free_port()
    host = Agent(tmp_path, "host", port, is_host=True)
    agents = [host]
    try:
        time.sleep(1.0)  # the host binds the rendezvous store first
        agents.append(leaver := Agent(tmp_path, "leaver", port, is_host=False))

        # 1. two nodes train
        rows = _wait(tmp_path, agents, "2-node training", lambda rs: any(r["world"] == 2 and r["step"] >= 5 for r in rs))
        assert all(r["accum"] == 1 for r in rows if r["world"] == 2)

        # 2. a SIGTERM-noticed leave: the notice reaches the survivor through the agreed flag, both save; none lost
        leaver.proc.send_signal(signal.SIGTERM)
        assert leaver.proc.wait(120) != 0
        before = _max_step(_rows(tmp_path))
        rows = _wait(tmp_path, [host], "the survivor re-forming alone", lambda rs: any(r["world"] == 1 for r in _starts(rs)))
        resumed = next(r for r in _starts(rows) if r["world"] == 1)
        lost_on_notice = max(0, before - resumed["step"])
        assert lost_on_notice == 0, f"a SIGTERM-noticed leave lost {lost_on_notice} steps"
        assert resumed["accum"] == 2  # global batch 128 = 64 x 2 x 1

        # 3. a replacement joins: torchrun restarts the survivor to admit it (SIGTERM -> emergency save); none lost
        _wait(tmp_path, [host], "progress on one node", lambda rs: _max_step(rs) >= resumed["step"] + 3)
        agents.append(joiner := Agent(tmp_path, "joiner", port, is_host=False))
        rows = _wait(tmp_path, [host, joiner], "the group re-forming with the replacement",
                     lambda rs: any(r["world"] == 2 and r["t"] > resumed["t"] for r in _starts(rs)))
        rejoined = next(r for r in _starts(rows) if r["world"] == 2 and r["t"] > resumed["t"])
        before_join = _max_step([r for r in rows if r["t"] < rejoined["t"]])
        lost_on_join = max(0, before_join - rejoined["step"])
        assert lost_on_join == 0
        assert rejoined["accum"] == 1

        # 4. the replacement is lost without notice: kill its agent and worker by pid
        _wait(tmp_path, [host, joiner], "2-node progress", lambda rs: _max_step(rs) >= rejoined["step"] + EVERY_N_STEPS + 2)
        killed = joiner.kill_hard()
        assert killed, "the joiner had no worker to kill"
        before_kill = _max_step(_rows(tmp_path))
        rows = _wait(tmp_path, [host], "the survivor resuming after the kill",
                     lambda rs: any(r["world"] == 1 and r["t"] > rejoined["t"] for r in _starts(rs)), timeout=400)
        after_kill = next(r for r in _starts(rows) if r["world"] == 1 and r["t"] > rejoined["t"])
        lost_on_kill = before_kill - after_kill["step"]
        assert after_kill["step"] > 0, "resumed from step 0, not from the newest checkpoint"
        assert 0 <= lost_on_kill <= EVERY_N_STEPS, f"lost {lost_on_kill} steps, more than one checkpoint interval"

        # progress never goes backwards past a checkpoint: every (re)start begins at or after the newest committed step
        starts = [r["step"] for r in _starts(_rows(tmp_path))]
        assert starts == sorted(starts), starts
        _wait(tmp_path, [host], "progress after the kill", lambda rs: _max_step(rs) >= after_kill["step"] + 2)
        print(f"\nsteps lost: SIGTERM leave {lost_on_notice}, join {lost_on_join}, SIGKILL {lost_on_kill} "
              f"(checkpoint every {EVERY_N_STEPS} steps); starts at {starts}")
        host.proc.send_signal(signal.SIGTERM)
        host.proc.wait(120)
        for pid in killed:
            assert not _alive(pid)
    finally:
        for a in agents:
            a.cleanup()


def test_losing_the_rendezvous_host_fails_cleanly(tmp_path):
    port = _free_port()
    host = Agent(tmp_path, "host", port, is_host=True)
    agents = [host]
    try:
        time.sleep(1.0)
        agents.append(other := Agent(tmp_path, "other", port, is_host=False))
        _wait(tmp_path, agents, "2-node training", lambda rs: any(r["world"] == 2 and r["step"] >= 2 for r in rs))
        workers = other.workers
        host.kill_hard()
        killed_at = time.monotonic()
        rc = other.proc.wait(300)
        out = other.output()
        assert rc != 0
        assert "RendezvousConnectionError: The connection to the C10d store has failed" in out, out[-3000:]
        print(f"\nlosing the rendezvous host: the other agent exited {rc} after {time.monotonic() - killed_at:.0f} s")
        time.sleep(1.0)
        assert not any(_alive(pid) for pid in workers), "the surviving agent left its worker behind"
    finally:
        for a in agents:
            a.cleanup()
