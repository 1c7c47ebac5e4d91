"""Restart supervisor: ``python -m mlcost_pl.supervise --max-restarts N [options] -- <command ...>``.

Runs the command; when it exits with ``PREEMPTED_EXIT_CODE`` (75) or dies by a signal (SIGTERM, SIGKILL, SIGUSR1,
SIGINT), reruns it after an exponential backoff, up to ``--max-restarts`` times. Other failures are rerun too, but
``--crash-loop K`` consecutive failures that leave no new checkpoint under ``--checkpoint-dir`` (or, without one,
K consecutive non-preemption failures) stop it with a message. SIGTERM, SIGINT, SIGUSR1, SIGUSR2 and SIGHUP sent to
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


def checkpoint_fingerprint(url: str | None) -> object:
    """A value that changes whenever a checkpoint file is added or rewritten under ``url`` (any fsspec URL)."""
    if not url:
        return None
    from mlcost_pl.utils.fs import get_fs

    fs, path = get_fs(url)
    try:
        found = fs.find(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return ()
    return tuple(sorted((name, info.get("size"), str(info.get("mtime") or info.get("LastModified") or info.get("updated"))) for name, info in found.items()))


def _log(msg: str) -> None:
    print(f"[supervise] {msg}", file=sys.stderr, flush=True)


class Supervisor:
    """Runs ``command`` with restarts; see the module docstring. ``run()`` returns the exit status to use."""

    def __init__(self, command: Sequence[str], max_restarts: int = 10, backoff: float = 1.0, backoff_max: float = 60.0,
                 crash_loop: int = 3, checkpoint_dir: str | None = None) -> None:
        if not command:
            raise ValueError("command is empty: pass it after `--`, e.g. `-- python train.py`")
        if max_restarts < 0:
            raise ValueError(f"--max-restarts must be >= 0, got {max_restarts}")
        if backoff < 0 or backoff_max < 0:
            raise ValueError(f"--backoff and --backoff-max must be >= 0, got {backoff} and {backoff_max}")
        self.command, self.max_restarts, self.backoff, self.backoff_max = list(command), max_restarts, backoff, backoff_max
        self.checkpoint_dir = checkpoint_dir
        self.detector = CrashLoopDetector(max_failures=crash_loop, fingerprint=checkpoint_fingerprint(checkpoint_dir))
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
            preempted = is_preemption(code)
            # Without --checkpoint-dir, a preemption counts as progress and only other failures make a crash loop.
            fingerprint = checkpoint_fingerprint(self.checkpoint_dir) if self.checkpoint_dir else (object() if preempted else None)
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
