"""Cost arithmetic: wall time x hourly price, accrued step by step, with an injectable clock.

Pure Python: no Lightning, no torch. ``CostMonitor`` is the Lightning adapter over :class:`CostMeter`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SECONDS_PER_HOUR = 3600.0


def process_start(clock: Callable[[], float] = time.monotonic) -> float | None:
    """When this process started, as a ``clock()`` reading (Linux ``/proc``), or ``None`` where unknown.

    The recipes bill from here: the instance is paid for while Python imports Lightning and loads data too.

    Example:
        >>> t = process_start()
        >>> t is None or t <= time.monotonic()
        True
    """
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5): start time in clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return clock() - max(0.0, age)


def instances_needed(num_nodes: int, devices_per_node: int, gpus_per_instance: int, uses_gpu: bool) -> int:
    """How many instances a run occupies (and is billed for).

    Each node is a machine; on GPUs a node needs ``ceil(devices_per_node / gpus_per_instance)`` instances of the
    type (one, when the instance has at least as many GPUs as the node uses). CPU processes share one machine.

    Example:
        >>> instances_needed(2, 8, 8, uses_gpu=True)   # 2 nodes of p4d.24xlarge
        2
        >>> instances_needed(1, 4, 1, uses_gpu=True)   # 4 single-GPU instances' worth of GPUs
        4
        >>> instances_needed(1, 2, 0, uses_gpu=False)  # 2 DDP processes on one CPU machine
        1
    """
    for arg, value in (("num_nodes", num_nodes), ("devices_per_node", devices_per_node)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
    if not uses_gpu:
        return num_nodes
    return num_nodes * math.ceil(devices_per_node / max(1, gpus_per_instance))


@dataclass
class CostWindow:
    """What happened between two :meth:`CostMeter.window` calls."""

    seconds: float
    usd: float
    steps: int
    samples: int

    @property
    def usd_per_step(self) -> float | None:
        return self.usd / self.steps if self.steps > 0 else None

    @property
    def samples_per_s(self) -> float | None:
        return self.samples / self.seconds if self.seconds > 0 else None


class CostMeter:
    """Accrues dollars from wall time at an hourly rate; cumulative totals survive :meth:`state_dict` round trips.

    Args:
        usd_per_hour: what the run pays per hour, all instances together.
        on_demand_usd_per_hour: the same instances on demand (for the on-demand equivalent).
        spot_usd_per_hour: the same instances on spot, ``None`` when unknown.
        clock: seconds, monotonic; tests inject a fake.

    Example:
        >>> t = [0.0]
        >>> meter = CostMeter(usd_per_hour=3.6, on_demand_usd_per_hour=3.6, spot_usd_per_hour=1.2, clock=lambda: t[0])
        >>> meter.start(); t[0] = 10.0; meter.tick(steps=5)
        >>> round(meter.usd_total, 6), round(meter.usd_spot_total, 6)
        (0.01, 0.003333)
    """

    def __init__(
        self,
        usd_per_hour: float,
        on_demand_usd_per_hour: float | None = None,
        spot_usd_per_hour: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for arg, value in (("usd_per_hour", usd_per_hour), ("on_demand_usd_per_hour", on_demand_usd_per_hour), ("spot_usd_per_hour", spot_usd_per_hour)):
            if value is not None and (not isinstance(value, (int, float)) or value < 0 or math.isnan(value)):
                raise ValueError(f"{arg} must be a number >= 0, got {value!r}")
        self.usd_per_hour = float(usd_per_hour)
        self.on_demand_usd_per_hour = float(on_demand_usd_per_hour if on_demand_usd_per_hour is not None else usd_per_hour)
        self.spot_usd_per_hour = None if spot_usd_per_hour is None else float(spot_usd_per_hour)
        self.clock = clock
        # Cumulative over every segment (fit) of the run; what state_dict persists.
        self.seconds_total = 0.0
        self.usd_total = 0.0
        self.usd_on_demand_total = 0.0
        self.usd_spot_total: float | None = 0.0 if self.spot_usd_per_hour is not None else None
        self.steps_total = 0
        self.samples_total = 0
        self.segments = 0
        self._last: float | None = None
        self._segment_start = (0.0, 0.0, 0, 0)  # (seconds, usd, steps, samples) at start(): per-segment averages
        self._mark = (0.0, 0.0, 0, 0)  # (seconds, usd, steps, samples) at the last window()

    @property
    def running(self) -> bool:
        return self._last is not None

    def start(self, at: float | None = None) -> None:
        """Start (or restart) accruing from now, or from ``at`` (an earlier ``clock()`` reading, e.g. the process
        start); a new segment (one fit, e.g. after a resume)."""
        now = self.clock()
        self._last = now if at is None else min(float(at), now)
        self.segments += 1
        self._segment_start = (self.seconds_total, self.usd_total, self.steps_total, self.samples_total)
        self._mark = (self.seconds_total, self.usd_total, self.steps_total, self.samples_total)

    def tick(self, steps: int = 0, samples: int = 0) -> None:
        """Accrue the wall time since the last tick and count ``steps`` optimizer steps and ``samples`` samples."""
        if self._last is not None:
            now = self.clock()
            dt = max(0.0, now - self._last)
            self._last = now
            hours = dt / SECONDS_PER_HOUR
            self.seconds_total += dt
            self.usd_total += hours * self.usd_per_hour
            self.usd_on_demand_total += hours * self.on_demand_usd_per_hour
            if self.usd_spot_total is not None and self.spot_usd_per_hour is not None:
                self.usd_spot_total += hours * self.spot_usd_per_hour
        self.steps_total += steps
        self.samples_total += samples

    def stop(self) -> None:
        """Accrue up to now and stop the clock."""
        self.tick()
        self._last = None

    def window(self) -> CostWindow:
        """Seconds, dollars, steps and samples since the previous call (or :meth:`start`)."""
        s, u, st, sa = self._mark
        self._mark = (self.seconds_total, self.usd_total, self.steps_total, self.samples_total)
        return CostWindow(self.seconds_total - s, self.usd_total - u, self.steps_total - st, self.samples_total - sa)

    @property
    def window_steps(self) -> int:
        """Steps counted since the last :meth:`window`."""
        return self.steps_total - self._mark[2]

    @property
    def usd_per_step(self) -> float | None:
        """Average dollars per step over the current segment (all overheads of this fit included)."""
        _, usd0, steps0, _ = self._segment_start
        steps = self.steps_total - steps0
        return (self.usd_total - usd0) / steps if steps > 0 else None

    @property
    def usd_per_step_overall(self) -> float | None:
        """Average dollars per step over the whole run (every segment)."""
        return self.usd_total / self.steps_total if self.steps_total > 0 else None

    def projected_usd(self, remaining_steps: int | float) -> float | None:
        """Dollars at the end of the run: spent so far + ``remaining_steps`` x this segment's dollars per step."""
        per_step = self.usd_per_step
        if per_step is None:
            return None
        return self.usd_total + max(0.0, float(remaining_steps)) * per_step

    def usd_for_seconds(self, seconds: float) -> float:
        """Dollars that ``seconds`` of wall time cost at the current rate (checkpoint overhead)."""
        return max(0.0, seconds) / SECONDS_PER_HOUR * self.usd_per_hour

    def usd_for_steps(self, steps: int) -> float:
        """Dollars that ``steps`` optimizer steps cost at the run's average (steps lost to preemption)."""
        per_step = self.usd_per_step_overall
        return 0.0 if per_step is None else max(0, steps) * per_step

    def state_dict(self) -> dict[str, Any]:
        """Cumulative totals (accrued up to now)."""
        self.tick()
        return {
            "seconds_total": self.seconds_total,
            "usd_total": self.usd_total,
            "usd_on_demand_total": self.usd_on_demand_total,
            "usd_spot_total": self.usd_spot_total,
            "steps_total": self.steps_total,
            "samples_total": self.samples_total,
            "segments": self.segments,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the cumulative totals with ``state``'s (new keys default to 0, so old checkpoints load).

        This meter's rates stay (a resume may run on another instance type). If the clock is already running, what
        accrued since :meth:`start` is kept on top of the loaded totals.
        """
        fields = ("seconds_total", "usd_total", "usd_on_demand_total", "usd_spot_total", "steps_total", "samples_total")
        if self.running:
            s0, u0, st0, sa0 = self._segment_start
            ratio = lambda rate: rate / self.usd_per_hour if self.usd_per_hour else 0.0  # noqa: E731
            extra = {"seconds_total": self.seconds_total - s0, "usd_total": self.usd_total - u0, "steps_total": self.steps_total - st0}
            extra["usd_on_demand_total"] = extra["usd_total"] * ratio(self.on_demand_usd_per_hour)
            extra["usd_spot_total"] = extra["usd_total"] * ratio(self.spot_usd_per_hour or 0.0)
            extra["samples_total"] = self.samples_total - sa0
        else:
            extra = dict.fromkeys(fields, 0)
        self.seconds_total = float(state.get("seconds_total", 0.0)) + extra["seconds_total"]
        self.usd_total = float(state.get("usd_total", 0.0)) + extra["usd_total"]
        self.usd_on_demand_total = float(state.get("usd_on_demand_total", 0.0)) + extra["usd_on_demand_total"]
        if self.spot_usd_per_hour is not None:
            self.usd_spot_total = float(state.get("usd_spot_total") or 0.0) + extra["usd_spot_total"]
        self.steps_total = int(state.get("steps_total", 0)) + int(extra["steps_total"])
        self.samples_total = int(state.get("samples_total", 0)) + int(extra["samples_total"])
        self.segments = int(state.get("segments", 0)) + (1 if self.running else 0)
        self._segment_start = (
            self.seconds_total - extra["seconds_total"],
            self.usd_total - extra["usd_total"],
            self.steps_total - int(extra["steps_total"]),
            self.samples_total - int(extra["samples_total"]),
        )
        self._mark = (self.seconds_total, self.usd_total, self.steps_total, self.samples_total)
