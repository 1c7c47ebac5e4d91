"""``python -m mlcost_pl.supervise``: real subprocesses (tiny python scripts, no torch), real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return path


def _supervise(args, timeout=60, **kw):
    return subprocess.run([sys.executable, "-m", "mlcost_pl.supervise", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def test_restarts_after_preemption_exit_and_sigkill_until_success(tmp_path):
    # run 0: exits 75 (preempted); run 1: SIGKILLs itself; run 2: succeeds. Each run appends to a log.
    child = _script(tmp_path, """
        import os, signal, sys
        n = int(os.environ["MLCOST_RESTART"])
        open(sys.argv[1], "a").write(f"{n}\\n")
        if n == 0:
            sys.exit(75)
        if n == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    log = tmp_path / "runs.txt"
    out = _supervise(["--max-restarts", "5", "--backoff", "0.05", "--", sys.executable, str(child), str(log)])
    assert out.returncode == 0, out.stderr
    assert log.read_text().split() == ["0", "1", "2"]
    assert "restart 1/5" in out.stderr and "killed by SIGKILL" in out.stderr and "succeeded after 2 restart(s)" in out.stderr


def test_max_restarts_then_gives_up_with_the_child_code(tmp_path):
    child = _script(tmp_path, "import sys; sys.exit(75)\n")
    out = _supervise(["--max-restarts", "2", "--backoff", "0.01", "--", sys.executable, str(child)])
    assert out.returncode == 75
    assert "--max-restarts 2 reached" in out.stderr and out.stderr.count("restart ") == 2


def test_crash_loop_without_new_checkpoint_stops_with_a_message(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    # The first run writes a checkpoint then crashes (progress); later runs crash without one -> crash loop.
    child = _script(tmp_path, """
        import os, sys
        if os.environ["MLCOST_RESTART"] == "0":  # a committed checkpoint folder: its manifest exists
            os.makedirs(os.path.join(sys.argv[1], "step-000000001-1764418500123"))
            open(os.path.join(sys.argv[1], "step-000000001-1764418500123", "MANIFEST.json"), "w").write("{}")
        open(os.path.join(sys.argv[1], "progress.json"), "w").write(os.environ["MLCOST_RESTART"])  # not progress
        raise RuntimeError("boom")
    """)
    out = _supervise(["--max-restarts", "10", "--backoff", "0.01", "--crash-loop", "2", "--checkpoint-dir", str(ckpt),
                      "--", sys.executable, str(child), str(ckpt)])
    assert out.returncode == 1
    assert "crash loop: 2 consecutive failures without a new checkpoint under" in out.stderr
    assert out.stderr.count("RuntimeError: boom") == 3


def test_forwards_sigterm_to_child_and_does_not_restart(tmp_path):
    child = _script(tmp_path, """
        import signal, sys, time
        def on_term(signum, frame):
            open(sys.argv[1], "w").write("got SIGTERM")
            sys.exit(75)
        signal.signal(signal.SIGTERM, on_term)
        open(sys.argv[2], "w").write("ready")
        time.sleep(60)
    """)
    marker, ready = tmp_path / "marker", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "mlcost_pl.supervise", "--max-restarts", "3", "--",
                             sys.executable, str(child), str(marker), str(ready)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < end:
            time.sleep(0.05)
        assert ready.exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75
    assert marker.read_text() == "got SIGTERM"
    assert "forwarding SIGTERM" in err and "not restarting" in err


def test_bad_usage_is_explained():
    out = _supervise(["--max-restarts", "2"])
    assert out.returncode == 2 and "no command given" in out.stderr
    out = _supervise(["--max-restarts", "-1", "--", "true"])
    assert out.returncode == 2 and "--max-restarts must be an integer >= 0" in out.stderr


# A SpotCheckpoint folder written by the real checkpoint code (commit_checkpoint, write_progress), from a bare torch
# process: attempt 0 trains, commits step 5 and is preempted (75); every later attempt resumes, rewrites progress.json
# at train start and after its first step (as SpotCheckpoint does), then crashes before committing anything.
_SPOT_CHILD = """
    import os, sys
    from mlcost_pl.checkpoint.manifest import commit_checkpoint, write_progress
    from mlcost_pl.checkpoint.storage import CheckpointStorage
    store = CheckpointStorage(sys.argv[1])
    open(sys.argv[2], "a").write(os.environ["MLCOST_RESTART"] + "\\n")
    if os.environ["MLCOST_RESTART"] == "0":
        commit_checkpoint(store, {"checkpoint.ckpt": b"weights"}, global_step=5)
        write_progress(store, 5, 0)
        sys.exit(75)
    write_progress(store, 5, 0)   # train start
    write_progress(store, 6, 0)   # after the first step
    raise RuntimeError("crash after the first step")
"""


def test_crash_loop_counts_only_committed_checkpoints_in_a_spot_folder(tmp_path):
    """Rewriting progress.json (or a stray file) is not progress: the crash loop stops after --crash-loop failures."""
    child = _script(tmp_path, _SPOT_CHILD)
    ckpt, log = tmp_path / "ckpt", tmp_path / "runs.txt"
    out = _supervise(["--max-restarts", "8", "--backoff", "0.01", "--crash-loop", "2", "--checkpoint-dir", str(ckpt),
                      "--", sys.executable, str(child), str(ckpt), str(log)], timeout=240)
    assert log.read_text().split() == ["0", "1", "2"], out.stderr[-3000:]
    assert out.returncode == 1
    assert "crash loop: 2 consecutive failures without a new checkpoint" in out.stderr
    assert (ckpt / "progress.json").exists() and len([p for p in ckpt.iterdir() if p.name.startswith("step-")]) == 1


def test_a_folder_that_cannot_be_listed_does_not_kill_the_supervisor(tmp_path):
    # s3fs-less protocol here: an unknown protocol fails to list at start and after every run.
    child = _script(tmp_path, """
        import os, sys
        sys.exit(75 if os.environ["MLCOST_RESTART"] == "0" else 0)
    """)
    out = _supervise(["--max-restarts", "3", "--backoff", "0.01", "--checkpoint-dir", "nosuchproto://bucket/run",
                      "--", sys.executable, str(child)])
    assert out.returncode == 0, out.stderr
    assert "cannot list --checkpoint-dir nosuchproto://bucket/run" in out.stderr
    assert "succeeded after 1 restart(s)" in out.stderr


def test_exit_code_2_is_a_config_error_and_is_not_restarted(tmp_path):
    child = _script(tmp_path, """
        import sys
        open(sys.argv[1], "a").write("run\\n")
        print("error: ValueError: model.backbone=resnet1000 is not a torchvision classifier", file=sys.stderr)
        sys.exit(2)
    """)
    log = tmp_path / "runs.txt"
    out = _supervise(["--max-restarts", "5", "--backoff", "0.01", "--", sys.executable, str(child), str(log)])
    assert out.returncode == 2
    assert log.read_text().split() == ["run"]
    assert "a config or usage error" in out.stderr and "not restarting" in out.stderr


@pytest.mark.parametrize("args, named", [
    (["--crash-loop", "0"], "--crash-loop must be an integer >= 1"),
    (["--backoff", "-1"], "--backoff must be a finite number of seconds >= 0"),
    (["--backoff-max", "inf"], "--backoff-max must be a finite number"),
])
def test_bad_options_name_the_option(args, named):
    out = _supervise([*args, "--", "true"])
    assert out.returncode == 2 and named in out.stderr and "max_failures" not in out.stderr
