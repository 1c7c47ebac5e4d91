"""Restart supervisor: ``python -m mlcost_pl.supervise --max-restarts N [options] -- <command ...>``.

Runs the command; when it exits with ``PREEMPTED_EXIT_CODE`` (75) or dies by a signal (SIGTERM, SIGKILL, SIGUSR1,
SIGINT), reruns it after an exponential backoff, up to ``--max-restarts`` times. Exit code 2 (a config or usage
error: the same command fails the same way) is never rerun. Other failures are rerun too, but ``--crash-loop K``
consecutive failures that commit no new checkpoint under ``--checkpoint-dir`` (a SpotCheckpoint folder: only a new
``MANIFEST.json`` counts, not ``progress.json`` or a half-written file; or, without one, K consecutive
non-preemption failures) stop it with a message. A folder that cannot be listed (a missing ``s3fs``, a network
error) is reported and treated as "no checkpoint information", never as a reason to stop. SIGTERM, SIGINT, SIGUSR1, SIGUSR2 and SIGHUP sent to
the supervisor are forwarded to the child; after a forwarded SIGTERM/SIGINT/SIGHUP the supervisor does not restart
(the machine is going away): it waits for the child and exits with its code.

The child sees ``MLCOST_RESTART=<n>`` (0 on the first run). Exit status: the child's last code (0 on success).

Example:
    python -m mlcost_pl.supervise --max-restarts 20 --checkpoint-dir s3://bucket/run1/ckpt -- \\
        python -m recipes.train callbacks=default
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from mlcost_pl.preemption.restart import PREEMPTED_EXIT_CODE, CrashLoopDetector, backoff_seconds, is_preemption

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
USAGE_ERROR_EXIT_CODE = 2  # argparse, Hydra and the recipes' one-line errors: rerunning cannot help


def committed_checkpoint_names(url: str) -> frozenset[str]:
    """Names of the committed checkpoints (folders with a ``MANIFEST.json``) in a SpotCheckpoint folder.

    Raises:
        Exception: whatever listing ``url`` raises (the caller decides what a failed listing means).
    """
    from mlcost_pl.checkpoint.manifest import committed_checkpoints
    from mlcost_pl.checkpoint.storage import CheckpointStorage

    return committed_checkpoints(CheckpointStorage(url))


def _log(msg: str) -> None:
    print(f"[supervise] {msg}", file=sys.stderr, flush=True)


def _listing(url: str) -> frozenset[str] | None:
    """:func:`committed_checkpoint_names`, or ``None`` (with a message) when the folder cannot be listed."""
    try:
        return committed_checkpoint_names(url)
    except Exception as err:  # noqa: BLE001 - a listing failure must not kill the supervisor
        _log(f"cannot list --checkpoint-dir {url} ({type(err).__name__}: {' '.join(str(err).split())}); "
             "counting this run without checkpoint information")
        return None


class Supervisor:
    """Runs ``command`` with restarts; see the module docstring. ``run()`` returns the exit status to use."""

    def __init__(self, command: Sequence[str], max_restarts: int = 10, backoff: float = 1.0, backoff_max: float = 60.0,
                 crash_loop: int = 3, checkpoint_dir: str | None = None) -> None:
        if not command:
            raise ValueError("command is empty: pass it after `--`, e.g. `-- python train.py`")
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"--max-restarts must be an integer >= 0, got {max_restarts!r}")
        for name, value in (("--backoff", backoff), ("--backoff-max", backoff_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        if isinstance(crash_loop, bool) or not isinstance(crash_loop, int) or crash_loop < 1:
            raise ValueError(f"--crash-loop must be an integer >= 1, got {crash_loop!r}")
        if checkpoint_dir is not None and (not isinstance(checkpoint_dir, str) or not checkpoint_dir.strip()):
            raise ValueError(f"--checkpoint-dir must be a path or fsspec URL, got {checkpoint_dir!r}")
        self.command, self.max_restarts, self.backoff, self.backoff_max = list(command), max_restarts, backoff, backoff_max
        self.checkpoint_dir = checkpoint_dir
        before = _listing(checkpoint_dir) if checkpoint_dir else None
        self.detector = CrashLoopDetector(max_failures=crash_loop, fingerprint=before)
        self.child: subprocess.Popen | None = None
        self.stopping: signal.Signals | None = None
        self.restarts = 0

    def _forward(self, signum: int, frame: object) -> None:
        sig = signal.Signals(signum)
        if sig in STOPPING:
            self.stopping = sig
        if self.child is not None and self.child.poll() is None:
            _log(f"forwarding {sig.name} to pid {self.child.pid}")
            self.child.send_signal(sig)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.stopping is None and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        try:
            return self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self) -> int:
        while True:
            env = {**os.environ, "MLCOST_RESTART": str(self.restarts)}
            started = time.monotonic()
            try:
                self.child = subprocess.Popen(self.command, env=env, start_new_session=True)
            except OSError as err:
                _log(f"cannot start {self.command[0]!r}: {err}")
                return 127
            code = self.child.wait()
            self.child = None
            took = time.monotonic() - started
            what = f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
            if code == 0:
                _log(f"command succeeded after {self.restarts} restart(s)")
                return 0
            if self.stopping is not None:
                _log(f"command ended ({what}) after the supervisor received {self.stopping.name}; not restarting")
                return code if code > 0 else 128 - code
            if code == USAGE_ERROR_EXIT_CODE:
                _log(f"command failed with exit code {code} (a config or usage error: rerunning would fail the same way); "
                     "not restarting. Fix the error above, then rerun.")
                return code
            preempted = is_preemption(code)
            # Progress = a newly committed checkpoint. Without --checkpoint-dir (or when it cannot be listed), a
            # preemption counts as progress and only other failures make a crash loop.
            listed = _listing(self.checkpoint_dir) if self.checkpoint_dir else None
            if listed is not None:
                fingerprint: object = listed
            elif preempted:
                fingerprint = object()
            else:
                fingerprint = self.detector.fingerprint
            if self.detector.record(failed=True, fingerprint=fingerprint):
                where = f"under {self.checkpoint_dir}" if self.checkpoint_dir else "(no --checkpoint-dir given)"
                _log(f"crash loop: {self.detector.failures} consecutive failures without a new checkpoint {where}; "
                     f"last run: {what} after {took:.1f} s; giving up. Fix the error above, then rerun.")
                return code if code > 0 else 128 - code
            if self.restarts >= self.max_restarts:
                _log(f"{what}; --max-restarts {self.max_restarts} reached; giving up")
                return code if code > 0 else 128 - code
            self.restarts += 1
            delay = backoff_seconds(self.restarts, self.backoff, 2.0, self.backoff_max)
            kind = "preempted" if preempted else "failed"
            _log(f"command {kind} ({what}) after {took:.1f} s; restart {self.restarts}/{self.max_restarts} in {delay:.1f} s")
            self._sleep(delay)
            if self.stopping is not None:
                _log(f"received {self.stopping.name} while waiting; not restarting")
                return PREEMPTED_EXIT_CODE


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        ours, command = argv[:split], argv[split + 1 :]
    else:
        ours, command = argv, []
    parser = argparse.ArgumentParser(prog="python -m mlcost_pl.supervise", description=__doc__.split("\n\n")[1],
                                     usage="%(prog)s [options] -- command ...")
    parser.add_argument("--max-restarts", type=int, default=10, help="restarts before giving up (default 10)")
    parser.add_argument("--backoff", type=float, default=1.0, help="first restart delay in seconds, doubled each time (default 1)")
    parser.add_argument("--backoff-max", type=float, default=60.0, help="cap of the restart delay in seconds (default 60)")
    parser.add_argument("--crash-loop", type=int, default=3, help="consecutive failures without a new checkpoint that stop it (default 3)")
    parser.add_argument("--checkpoint-dir", default=None, help="path or fsspec URL whose changes count as progress")
    args = parser.parse_args(ours)
    if not command:
        parser.error("no command given: put it after `--`, e.g. `-- python train.py`")
    try:
        sup = Supervisor(command, args.max_restarts, args.backoff, args.backoff_max, args.crash_loop, args.checkpoint_dir)
    except ValueError as err:
        parser.error(str(err))
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
