"""Turn OS signals into a preemption notice: install handlers for a configurable list, restore them afterwards."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")


def parse_signal(sig: str | int | signal.Signals) -> signal.Signals:
    """``"SIGTERM"``, ``"TERM"``, ``15`` or ``signal.SIGTERM`` -> ``signal.SIGTERM``.

    Raises:
        ValueError: an unknown name or number, or SIGKILL/SIGSTOP (which cannot be caught).

    Example:
        >>> parse_signal("usr1"), parse_signal(15)
        (<Signals.SIGUSR1: 10>, <Signals.SIGTERM: 15>)
    """
    try:
        if isinstance(sig, str) and not sig.strip().lstrip("-").isdigit():
            name = sig.strip().upper()
            out = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        else:
            out = signal.Signals(int(sig))
    except (KeyError, ValueError):
        raise ValueError(f"signals: unknown signal {sig!r}; use names such as 'SIGTERM', 'SIGUSR1' or numbers") from None
    if out in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(f"signals: {out.name} cannot be caught; use e.g. 'SIGTERM' or 'SIGUSR1'")
    return out


class SignalNotice:
    """Records the first of ``signals`` received, as a preemption notice. Handlers only set a flag (async-safe).

    Args:
        signals: signal names or numbers to treat as a notice (default SIGTERM and SIGUSR1).

    Raises:
        ValueError: an unknown or uncatchable signal.

    Example:
        >>> import os
        >>> notice = SignalNotice(["SIGUSR1"])
        >>> notice.install()
        >>> os.kill(os.getpid(), signal.SIGUSR1)
        >>> notice.is_set(), notice.reason
        (True, 'signal SIGUSR1')
        >>> notice.restore()
    """

    def __init__(self, signals: Iterable[str | int] = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(dict.fromkeys(parse_signal(s) for s in signals))
        self._event = threading.Event()
        self.reason: str | None = None
        self.received_at: float | None = None  # time.monotonic() of the first notice
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.set(f"signal {signal.Signals(signum).name}")

    def set(self, reason: str) -> None:
        """Record a notice (the first reason wins); also used by the cloud watchers."""
        if not self._event.is_set():
            self.reason = reason
            self.received_at = time.monotonic()
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self.reason = self.received_at = None

    def __getstate__(self) -> dict[str, Any]:  # picklable (ddp_spawn): the event and installed handlers stay behind
        state = self.__dict__.copy()
        state["_event"], state["_previous"] = self._event.is_set(), {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        was_set = state.pop("_event")
        self.__dict__.update(state)
        self._event = threading.Event()
        if was_set:
            self._event.set()

    def install(self) -> None:
        """Replace the handlers of ``signals`` (main thread only); ``restore()`` puts the previous ones back."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("SignalNotice.install() must run in the main thread (Python delivers signals there)")
        for sig in self.signals:
            if sig not in self._previous:
                self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers found by ``install()``, unless someone replaced ours since."""
        for sig, previous in self._previous.items():
            current = signal.getsignal(sig)
            if getattr(current, "__self__", None) is self:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
