"""What one replica serves at the latency SLO: the ``capacity.json`` that ``recipes.autoscale measure`` writes and the
planner reads, tied to the model it was measured on."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mlcost_pl.errors import MissingInputError, UserInputError

CAPACITY_FILE = "capacity.json"


@dataclass(frozen=True)
class Capacity:
    """One replica's capacity at the SLO.

    Args:
        rps: requests/s one replica sustains with p99 latency within ``slo_ms`` (> 0).
        slo_ms: the latency SLO the capacity was measured at (p99), or ``None`` when given by hand.
        cpu_utilization_at_capacity: CPU use at ``rps`` as a percent of the pod's CPU request (what an HPA CPU target
            is written in); 100 when unknown.
        saturation_rps: the most requests/s one replica completes when overloaded (>= ``rps``); a CPU metric stops
            growing there. Defaults to ``rps``.
        startup_s: seconds from pod creation to ready (image pull excluded).
        mean_latency_ms: mean latency near capacity; converts requests/s into in-flight requests (Little's law) for
            the in-flight metric's target. Unknown: half the SLO, or 25 ms.
        model_version: the sha256 of the export's ``manifest.json``; ``None`` for a capacity given by hand.
        model_dir: where the measured model was.
        measured: the measurement's details (ramp steps, p99s, host), for the record.

    Raises:
        ValueError: a non-positive or non-numeric figure (named ``capacity.<field>``).
    """

    rps: float
    slo_ms: float | None = None
    cpu_utilization_at_capacity: float = 100.0
    saturation_rps: float | None = None
    startup_s: float = 30.0
    mean_latency_ms: float | None = None
    model_version: str | None = None
    model_dir: str | None = None
    measured: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("rps", "cpu_utilization_at_capacity", "startup_s", "saturation_rps", "slo_ms", "mean_latency_ms"):
            value = getattr(self, name)
            if value is None and name in ("saturation_rps", "slo_ms", "mean_latency_ms"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserInputError(f"capacity.{name} must be a number, got {value!r}")
            if value < 0 or (value == 0 and name != "startup_s"):
                raise UserInputError(f"capacity.{name} must be > 0, got {value!r}")
        if self.saturation_rps is None:
            object.__setattr__(self, "saturation_rps", float(self.rps))
        elif self.saturation_rps < self.rps:
            raise UserInputError(f"capacity.saturation_rps ({self.saturation_rps}) must be >= capacity.rps ({self.rps})")

    @property
    def mean_latency_s(self) -> float:
        """Mean latency near capacity in seconds (measured, else half the SLO, else 25 ms)."""
        if self.mean_latency_ms is not None:
            return self.mean_latency_ms / 1000
        return self.slo_ms / 2000 if self.slo_ms else 0.025

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "capacity") -> Capacity:
        """Build from a mapping (a parsed ``capacity.json`` or Hydra's ``capacity.*`` keys); unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserInputError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(known))}")
        if "rps" not in data or data["rps"] is None:
            raise UserInputError(f"{where}: needs rps (requests/s one replica sustains at the SLO), e.g. capacity.rps=120")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def model_version(model_dir: str | os.PathLike[str]) -> str:
    """The version of an export folder: the sha256 of its ``manifest.json`` (which hashes every model file).

    Raises:
        FileNotFoundError: no folder or no manifest (named as ``model_dir``).
    """
    manifest = Path(model_dir) / "manifest.json"
    if not Path(model_dir).is_dir():
        raise MissingInputError(f"model_dir={model_dir}: no such folder (give a recipes.export output folder)")
    if not manifest.is_file():
        raise MissingInputError(f"model_dir={model_dir}: no manifest.json (not a recipes.export output folder)")
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def load_capacity(source: str | os.PathLike[str] | Mapping[str, Any], model_dir: str | os.PathLike[str] | None = None) -> Capacity:
    """A capacity from a ``capacity.json`` path, a JSON string, or a mapping; checked against ``model_dir``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it does not parse, has bad figures, or was measured on another model version than ``model_dir``.
    """
    if isinstance(source, Mapping):
        capacity, where = Capacity.from_dict(source), "capacity"
    else:
        text, where = str(source), str(source)
        if not text.lstrip().startswith("{"):
            path = Path(text)
            if not path.is_file():
                raise MissingInputError(f"capacity={text}: no such file (run recipes.autoscale measure, or give capacity.rps=N)")
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserInputError(f"capacity={where}: not JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(data, dict):
            raise UserInputError(f"capacity={where}: expected a JSON object, got {type(data).__name__}")
        capacity = Capacity.from_dict(data, where=f"capacity={where}")
    if model_dir is not None and capacity.model_version is not None:
        version = model_version(model_dir)
        if version != capacity.model_version:
            raise UserInputError(f"capacity={where} was measured on another model version ({capacity.model_version[:12]}, "
                             f"{capacity.model_dir}) than model_dir={model_dir} ({version[:12]}): re-run recipes.autoscale measure")
    return capacity


def write_json(data: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON atomically (``mlcost_pl.utils.fs.atomic_write_local``)."""
    from mlcost_pl.utils.fs import atomic_write_local

    atomic_write_local(path, json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)
