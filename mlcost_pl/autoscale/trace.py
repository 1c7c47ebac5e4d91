"""Traffic traces: CSV ``seconds,requests_per_s``, validated, plus two bundled traces generated from a seed.

A trace is piecewise constant: row ``i`` gives the arrival rate from ``seconds[i]`` until the next row (the last row
lasts one step). Rows must be evenly spaced; a missing row is a gap and is refused, because silently bridging it would
invent traffic. Pure numpy: no torch, no Lightning.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlcost_pl.errors import MissingInputError, UserInputError

BUNDLED = ("diurnal", "spiky")
DAY_S = 86_400


@dataclass(frozen=True)
class Trace:
    """A request-rate trace.

    Attributes:
        seconds: start of each row, seconds from the start of the trace (evenly spaced, first row at 0 after loading).
        rps: arrival rate of each row, requests per second (>= 0).
        name: where it came from (a bundled name or a file path).
    """

    seconds: np.ndarray
    rps: np.ndarray
    name: str = "trace"

    @property
    def step_s(self) -> int:
        """Seconds between rows."""
        return int(self.seconds[1] - self.seconds[0]) if len(self.seconds) > 1 else 1

    @property
    def duration_s(self) -> int:
        """Seconds the trace covers (the last row lasts one step)."""
        return int(len(self.rps) * self.step_s)

    def per_second(self) -> np.ndarray:
        """The rate of every second of the trace (each row repeated ``step_s`` times)."""
        return np.repeat(self.rps.astype(float), self.step_s)

    @property
    def total_requests(self) -> float:
        """Requests the trace carries in all."""
        return float(self.rps.sum() * self.step_s)

    def scaled(self, peak_rps: float) -> Trace:
        """The same shape with its peak at ``peak_rps`` (your traffic's shape at another volume).

        Raises:
            ValueError: ``peak_rps`` not > 0, or an all-zero trace.
        """
        if not peak_rps > 0 or not self.rps.max() > 0:
            raise UserInputError(f"peak_rps must be > 0 and the trace must carry traffic, got {peak_rps!r}")
        return Trace(self.seconds, self.rps * (peak_rps / self.rps.max()), f"{self.name} (peak {peak_rps:g}/s)")

    def compressed(self, factor: float, name: str | None = None) -> Trace:
        """The same shape played ``factor`` times faster (durations divided by ``factor``, rates unchanged), resampled
        to one row per second; used to replay a day in minutes against real servers."""
        if factor < 1:
            raise UserInputError(f"factor must be >= 1, got {factor}")
        rate = self.per_second()
        n = int(len(rate) // factor)
        if n < 1:
            raise UserInputError(f"factor={factor} leaves less than one second of the {self.duration_s} s trace")
        edges = (np.arange(n + 1) * factor).astype(int)
        means = np.add.reduceat(rate, edges[:-1]) / np.diff(edges)
        return Trace(np.arange(n), means, name or f"{self.name} x{factor:g} faster")


def _problem(where: str, line: int, message: str) -> UserInputError:
    return UserInputError(f"trace={where}: line {line}: {message}")


def parse_trace(text: str, where: str = "trace") -> Trace:
    """Parse CSV text with a ``seconds,requests_per_s`` header.

    Raises:
        ValueError: one line naming ``where``, the line and the problem: wrong header, a non-numeric or negative rate,
            seconds not increasing, uneven spacing (a gap), fewer than two rows.
    """
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        raise UserInputError(f"trace={where}: empty file; expected a header 'seconds,requests_per_s' and rows")
    header = [c.strip() for c in rows[0]]
    if header != ["seconds", "requests_per_s"]:
        raise UserInputError(f"trace={where}: header must be 'seconds,requests_per_s', got {','.join(header)!r}")
    seconds: list[float] = []
    rates: list[float] = []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise _problem(where, i, f"expected 2 columns (seconds,requests_per_s), got {len(row)}")
        try:
            sec, rate = float(row[0]), float(row[1])
        except ValueError:
            raise _problem(where, i, f"non-numeric value in {','.join(row)!r}") from None
        if not (math.isfinite(sec) and math.isfinite(rate)):
            raise _problem(where, i, f"non-finite value in {','.join(row)!r}")
        if rate < 0:
            raise _problem(where, i, f"negative rate {rate:g} requests/s")
        if sec != int(sec):
            raise _problem(where, i, f"seconds must be whole, got {sec:g}")
        seconds.append(sec)
        rates.append(rate)
    if len(seconds) < 2:
        raise UserInputError(f"trace={where}: needs at least 2 rows, got {len(seconds)}")
    sec_arr = np.asarray(seconds, dtype=np.int64)
    steps = np.diff(sec_arr)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise _problem(where, i + 3, f"seconds must increase: {sec_arr[i + 1]} after {sec_arr[i]}")
    step = int(steps[0])
    if (steps != step).any():
        i = int(np.argmax(steps != step))
        raise _problem(where, i + 3, f"gap: seconds jumps from {sec_arr[i]} to {sec_arr[i + 1]}, the trace's step is {step} s")
    return Trace(sec_arr - sec_arr[0], np.asarray(rates, dtype=float), name=where)


def load_trace(source: str | os.PathLike[str], seed: int = 0) -> Trace:
    """A bundled trace by name (``diurnal``, ``spiky``; generated from ``seed``) or a CSV file.

    Raises:
        FileNotFoundError: no such file (and not a bundled name).
        ValueError: the file is not a valid trace (see ``parse_trace``).
    """
    name = str(source)
    if name in BUNDLED:
        return bundled_trace(name, seed=seed)
    path = Path(name)
    if not path.is_file():
        raise MissingInputError(f"trace={name}: no such file (bundled traces: {', '.join(BUNDLED)})")
    return parse_trace(path.read_text(), where=name)


def trace_csv(trace: Trace) -> str:
    """The CSV text of ``trace``."""
    lines = ["seconds,requests_per_s"] + [f"{int(s)},{r:.3f}" for s, r in zip(trace.seconds, trace.rps)]
    return "\n".join(lines) + "\n"


def write_trace(trace: Trace, path: str | os.PathLike[str]) -> Path:
    """Write ``trace`` as CSV atomically (``mlcost_pl.utils.fs.atomic_write_local``)."""
    from mlcost_pl.utils.fs import atomic_write_local

    atomic_write_local(path, trace_csv(trace))
    return Path(path)


def diurnal_trace(seed: int = 0, peak_rps: float = 1200.0, trough_fraction: float = 0.12, step_s: int = 60,
                  noise: float = 0.04) -> Trace:
    """One day of traffic with a morning and an evening peak over a night trough, plus seeded multiplicative noise.

    The shape is the sum of two Gaussian bumps (11:00 and 19:30) on a floor of ``trough_fraction x peak_rps``; each
    row gets lognormal noise with sigma ``noise``. The same seed gives the same trace.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(0, DAY_S, step_s)
    hours = t / 3600.0
    shape = 0.85 * np.exp(-((hours - 11.0) / 3.0) ** 2) + 1.0 * np.exp(-((hours - 19.5) / 2.5) ** 2)
    shape = trough_fraction + (1 - trough_fraction) * shape / shape.max()
    rps = peak_rps * shape * rng.lognormal(0.0, noise, size=len(t))
    return Trace(t, np.round(rps, 3), name="diurnal")


def spiky_trace(seed: int = 0, base_rps: float = 300.0, step_s: int = 10, spikes_per_day: int = 12,
                spike_factor: tuple[float, float] = (2.0, 4.0), spike_s: tuple[int, int] = (60, 600)) -> Trace:
    """One day of flatter traffic with sudden bursts: a mild diurnal base (0.5-1.0 x ``base_rps``), and
    ``spikes_per_day`` bursts at seeded random times that multiply it by 2-4x for 1-10 minutes, rising in one step."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, DAY_S, step_s)
    hours = t / 3600.0
    rps = base_rps * (0.75 + 0.25 * np.sin((hours - 9.0) / 24.0 * 2 * np.pi))
    for _ in range(spikes_per_day):
        start = rng.integers(0, DAY_S - spike_s[1])
        length = rng.integers(spike_s[0], spike_s[1] + 1)
        factor = rng.uniform(*spike_factor)
        inside = (t >= start) & (t < start + length)
        rps[inside] *= factor
    rps *= rng.lognormal(0.0, 0.05, size=len(t))
    return Trace(t, np.round(rps, 3), name="spiky")


def bundled_trace(name: str, seed: int = 0) -> Trace:
    """``diurnal`` or ``spiky``, generated from ``seed``.

    Raises:
        ValueError: an unknown name (the allowed names listed).
    """
    if name == "diurnal":
        return diurnal_trace(seed)
    if name == "spiky":
        return spiky_trace(seed)
    raise UserInputError(f"trace={name!r}: not a bundled trace; choose one of {', '.join(BUNDLED)} or give a CSV path")
