"""Signal notices (real signals to this process) and the pure restart policy."""

from __future__ import annotations

import os
import signal

import pytest

from mlcost_pl.preemption.restart import PREEMPTED_EXIT_CODE, CrashLoopDetector, PreemptedExit, backoff_seconds, is_preemption
from mlcost_pl.preemption.signals import SignalNotice, parse_signal


def test_signal_notice_catches_configured_signals_and_restores_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    notice = SignalNotice(["SIGUSR1", "usr2"])
    notice.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert notice.is_set() and notice.reason == "signal SIGUSR2" and notice.received_at is not None
        os.kill(os.getpid(), signal.SIGUSR1)
        assert notice.reason == "signal SIGUSR2"  # the first notice wins
    finally:
        notice.restore()
    assert signal.getsignal(signal.SIGUSR1) is before


def test_parse_signal_rejects_unknown_and_uncatchable():
    assert parse_signal("TERM") is signal.SIGTERM and parse_signal(10) is signal.SIGUSR1
    with pytest.raises(ValueError, match="unknown signal 'SIGNOPE'"):
        parse_signal("SIGNOPE")
    with pytest.raises(ValueError, match="SIGKILL cannot be caught"):
        SignalNotice(["SIGKILL"])


def test_backoff_is_exponential_and_capped():
    assert [backoff_seconds(a, base=0.5, cap=3) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="attempt"):
        backoff_seconds(0)


def test_preemption_codes():
    assert PREEMPTED_EXIT_CODE == 75 and PreemptedExit().code == 75
    assert is_preemption(75) and is_preemption(-signal.SIGTERM) and is_preemption(128 + signal.SIGKILL)
    assert not is_preemption(0) and not is_preemption(1) and not is_preemption(-signal.SIGSEGV)


def test_crash_loop_needs_consecutive_failures_without_a_new_checkpoint():
    d = CrashLoopDetector(max_failures=2, fingerprint=None)
    assert not d.record(failed=True, fingerprint="a")  # a new checkpoint: progress
    assert not d.record(failed=True, fingerprint="a")  # 1 failure without progress
    assert not d.record(failed=True, fingerprint="b")  # progress resets
    assert not d.record(failed=True, fingerprint="b")
    assert d.record(failed=True, fingerprint="b")
    with pytest.raises(ValueError, match="max_failures"):
        CrashLoopDetector(max_failures=0)
