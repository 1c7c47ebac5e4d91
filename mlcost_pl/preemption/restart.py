"""Restart policy shared by ``PreemptionHandler`` and ``python -m mlcost_pl.supervise``: pure functions, no torch.

``PREEMPTED_EXIT_CODE`` (75, ``EX_TEMPFAIL`` in ``sysexits.h``: "temporary failure, try again") is the exit status of
a training process that received a preemption notice, wrote an emergency checkpoint and stopped on purpose. A
supervisor (ours, a Kubernetes ``podFailurePolicy``, a SLURM epilog) should rerun the same command on seeing it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

PREEMPTED_EXIT_CODE = 75


class PreemptedExit(SystemExit):
    """Raised after the emergency checkpoint: leaves ``trainer.fit`` and the process with ``PREEMPTED_EXIT_CODE``."""

    def __init__(self, message: str = "preempted") -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (exit code {PREEMPTED_EXIT_CODE})"


def backoff_seconds(attempt: int, base: float = 1.0, factor: float = 2.0, cap: float = 60.0) -> float:
    """Delay before restart number ``attempt`` (1-based): ``base * factor**(attempt-1)``, capped at ``cap``.

    Example:
        >>> [backoff_seconds(a, base=1, cap=5) for a in (1, 2, 3, 4)]
        [1.0, 2.0, 4.0, 5.0]
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if base < 0 or factor < 1 or cap < 0:
        raise ValueError(f"backoff needs base >= 0, factor >= 1, cap >= 0; got base={base}, factor={factor}, cap={cap}")
    return float(min(cap, base * factor ** (attempt - 1)))


def is_preemption(returncode: int) -> bool:
    """Whether a child's return code means "preempted, restart me".

    ``PREEMPTED_EXIT_CODE``, or death by a signal the cloud sends on preemption (SIGTERM, SIGUSR1, SIGKILL as seen by
    ``subprocess``: a negative code; or ``128 + signum`` as a shell reports it).

    Example:
        >>> is_preemption(75), is_preemption(-9), is_preemption(1)
        (True, True, False)
    """
    signums = {int(signal.SIGTERM), int(signal.SIGKILL), int(signal.SIGUSR1), int(signal.SIGINT)}
    return returncode == PREEMPTED_EXIT_CODE or -returncode in signums or returncode - 128 in signums


@dataclass
class CrashLoopDetector:
    """Says "stop" after ``max_failures`` consecutive failed runs that left no new checkpoint.

    Progress is any change of a checkpoint fingerprint (e.g. the newest checkpoint's path and mtime) that the caller
    reads after each run; a failed run that still committed a checkpoint (a preemption) resets the count.

    Args:
        max_failures: consecutive failures without progress that make a crash loop.
        fingerprint: the fingerprint before the first run (``None``: no checkpoint yet).

    Example:
        >>> d = CrashLoopDetector(max_failures=2, fingerprint="ckpt-1")
        >>> d.record(failed=True, fingerprint="ckpt-2"), d.record(failed=True, fingerprint="ckpt-2")
        (False, False)
        >>> d.record(failed=True, fingerprint="ckpt-2")
        True
    """

    max_failures: int = 3
    fingerprint: object = None
    failures: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < 1:
            raise ValueError(f"crash_loop (max_failures) must be an integer >= 1, got {self.max_failures!r}")

    def record(self, failed: bool, fingerprint: object) -> bool:
        """Record one run's outcome and the fingerprint after it; True means a crash loop (stop restarting).

        Set fingerprints (the names of committed checkpoints) progress only when a name is new: retention deleting
        old checkpoints is not progress. Other fingerprints progress on any change.
        """
        if isinstance(fingerprint, (set, frozenset)) and isinstance(self.fingerprint, (set, frozenset)):
            progressed = bool(fingerprint - self.fingerprint)
        elif isinstance(fingerprint, (set, frozenset)) and self.fingerprint is None:
            progressed = bool(fingerprint)
        else:
            progressed = fingerprint != self.fingerprint
        self.fingerprint = fingerprint
        self.failures = 0 if (progressed or not failed) else self.failures + 1
        return self.failures >= self.max_failures
