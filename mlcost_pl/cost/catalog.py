"""The price catalog: a bundled, dated YAML of instance prices that users override or extend.

Pure Python (PyYAML + fsspec): no Lightning, no torch.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import yaml

from mlcost_pl.errors import MissingInputError, UserInputError

CUSTOM = "custom"
_FIELDS = ("cloud", "on_demand", "spot", "gpus", "gpu", "region")


class UnknownInstanceError(UserInputError):
    """An instance name that is not in the catalog; the message lists the nearest names."""


@dataclass(frozen=True)
class InstancePrice:
    """One catalog entry: the price of ONE instance (all its GPUs) per hour.

    Attributes:
        name: the cloud's instance type name (``p4d.24xlarge``) or ``custom``.
        cloud: ``aws``, ``gcp``, ``azure``, ``local``, or whatever an override says.
        on_demand: on-demand USD per instance-hour (``None`` only for an unpriced ``custom`` entry).
        spot: a typical spot/preemptible USD per instance-hour, ``None`` when unknown.
        gpus: GPUs per instance (0 for CPU machines).
        gpu: the GPU model, e.g. ``A100-40GB``.
        region: the region the price was taken from.
    """

    name: str
    cloud: str = "local"
    on_demand: float | None = None
    spot: float | None = None
    gpus: int = 0
    gpu: str | None = None
    region: str | None = None

    def price(self, market: str) -> float | None:
        """USD per instance-hour on ``market`` (``on_demand`` or ``spot``)."""
        if market not in ("on_demand", "spot"):
            raise UserInputError(f"market must be 'on_demand' or 'spot', got {market!r}")
        return self.on_demand if market == "on_demand" else self.spot


def _entry(name: str, fields: Any, base: InstancePrice | None, where: str) -> InstancePrice:
    if not isinstance(fields, Mapping):
        raise UserInputError(f"{where}.{name}: expected a mapping of {', '.join(_FIELDS)}, got {fields!r}")
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise UserInputError(f"{where}.{name}: unknown field(s) {unknown}; allowed: {', '.join(_FIELDS)}")
    values = dict(fields)
    for key in ("on_demand", "spot"):
        if values.get(key) is not None:
            try:
                values[key] = float(values[key])
            except (TypeError, ValueError):
                raise UserInputError(f"{where}.{name}.{key} must be a number of USD per hour, got {values[key]!r}") from None
            if values[key] < 0:
                raise UserInputError(f"{where}.{name}.{key} must be >= 0, got {values[key]}")
    if "gpus" in values:
        if not isinstance(values["gpus"], int) or isinstance(values["gpus"], bool) or values["gpus"] < 0:
            raise UserInputError(f"{where}.{name}.gpus must be an integer >= 0, got {values['gpus']!r}")
    base = base or InstancePrice(name=name)
    return replace(base, **values)


@functools.lru_cache(maxsize=1)
def _bundled() -> tuple[dict[str, InstancePrice], str, str | None]:
    data = yaml.safe_load(resources.files("mlcost_pl.cost").joinpath("prices.yaml").read_text())
    instances = {name: _entry(name, fields, None, "prices.yaml") for name, fields in data["instances"].items()}
    return instances, str(data.get("as_of")), data.get("source")


class PriceCatalog:
    """Instance prices by name: the bundled ``prices.yaml``, then user overrides on top.

    Args:
        instances: ``{name: InstancePrice}``.
        as_of: the date the prices were taken.
        source: where they were taken from.

    Example:
        >>> catalog = PriceCatalog.load(overrides={"custom": {"on_demand": 0.10}})
        >>> catalog.lookup("custom").on_demand
        0.1
        >>> catalog.lookup("p4d.24xlarge").gpus
        8
    """

    def __init__(self, instances: Mapping[str, InstancePrice], as_of: str | None = None, source: str | None = None) -> None:
        self.instances = dict(instances)
        self.as_of = as_of
        self.source = source

    @classmethod
    def bundled(cls) -> PriceCatalog:
        """The catalog shipped with mlcost_pl (``mlcost_pl/cost/prices.yaml``)."""
        instances, as_of, source = _bundled()
        return cls(instances, as_of=as_of, source=source)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, file: str | None = None) -> PriceCatalog:
        """The bundled catalog, then the entries of ``file`` (YAML/JSON, local or fsspec URL), then ``overrides``."""
        catalog = cls.bundled()
        if file:
            catalog = catalog.with_file(file)
        if overrides:
            catalog = catalog.with_overrides(overrides)
        return catalog

    def with_overrides(self, overrides: Mapping[str, Any], where: str = "prices") -> PriceCatalog:
        """A new catalog with ``{name: {field: value}}`` merged in: existing entries are updated field by field,
        new names are added (they need ``on_demand``).

        Raises:
            ValueError: not a mapping, an unknown field, a negative or non-numeric price (the message names it).
        """
        if not isinstance(overrides, Mapping):
            raise UserInputError(f"{where} must be a mapping of instance name -> fields, got {type(overrides).__name__}")
        if "instances" in overrides and isinstance(overrides["instances"], Mapping):
            overrides = overrides["instances"]
        instances = dict(self.instances)
        for name, fields in overrides.items():
            name = str(name)
            entry = _entry(name, fields, instances.get(name), where)
            if name not in instances and entry.on_demand is None:
                raise UserInputError(f"{where}.{name}: a new instance needs an on_demand price (USD per hour)")
            instances[name] = entry
        return PriceCatalog(instances, as_of=self.as_of, source=self.source)

    def with_file(self, url: str) -> PriceCatalog:
        """A new catalog with the entries of a YAML or JSON file (local path or fsspec URL) merged in.

        Raises:
            FileNotFoundError: ``url`` does not exist (named).
            ValueError: the file does not parse or has a bad entry (named).
        """
        from mlcost_pl.utils.fs import get_fs

        fs, path = get_fs(url)
        try:
            text = fs.cat_file(path).decode()
        except FileNotFoundError:
            raise MissingInputError(f"prices_file: {url}: no such file") from None
        try:
            data = json.loads(text) if str(url).endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:
            raise UserInputError(f"prices_file: {url} does not parse: {err}") from None
        return self.with_overrides(data or {}, where=f"prices_file {url}")

    def lookup(self, name: str) -> InstancePrice:
        """The entry for ``name`` (exact, then case-insensitive).

        Raises:
            UnknownInstanceError: (a ``ValueError``) naming ``name`` and the nearest catalog names.
        """
        if name in self.instances:
            return self.instances[name]
        folded = {k.lower(): k for k in self.instances}
        if str(name).lower() in folded:
            return self.instances[folded[str(name).lower()]]
        near = difflib.get_close_matches(str(name), list(self.instances), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise UnknownInstanceError(
            f"instance {name!r} is not in the price catalog (as of {self.as_of}).{hint} Add it with "
            f"prices={{{name!r}: {{'on_demand': <usd/h>, 'gpus': <n>}}}}, or use instance='custom' with usd_per_hour=..."
        )

    def names(self) -> list[str]:
        """All instance names, sorted."""
        return sorted(self.instances)


def resolve_instance(
    instance: str,
    usd_per_hour: float | None = None,
    spot_usd_per_hour: float | None = None,
    prices: Mapping[str, Any] | None = None,
    prices_file: str | None = None,
    gpus: int | None = None,
) -> InstancePrice:
    """Look ``instance`` up in the (overridden) catalog and apply explicit prices.

    ``usd_per_hour``/``spot_usd_per_hour`` override the catalog's on-demand/spot price of one instance; ``custom``
    needs an on-demand price from one of them or from ``prices``.

    Raises:
        UnknownInstanceError: ``instance`` is not in the catalog (near matches listed).
        ValueError: ``custom`` without a price; a negative price (naming the argument).
    """
    for arg, value in (("usd_per_hour", usd_per_hour), ("spot_usd_per_hour", spot_usd_per_hour)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise UserInputError(f"{arg} must be a number >= 0 (USD per instance-hour), got {value!r}")
    if gpus is not None and (not isinstance(gpus, int) or gpus < 0):
        raise UserInputError(f"gpus must be an integer >= 0, got {gpus!r}")
    entry = PriceCatalog.load(prices, prices_file).lookup(instance)
    if usd_per_hour is not None:
        entry = replace(entry, on_demand=float(usd_per_hour))
    if spot_usd_per_hour is not None:
        entry = replace(entry, spot=float(spot_usd_per_hour))
    if gpus is not None:
        entry = replace(entry, gpus=gpus)
    if entry.on_demand is None:
        raise UserInputError(
            f"instance={instance!r} has no price: give usd_per_hour=<USD per hour of this machine> "
            f"(or prices={{{instance!r}: {{'on_demand': ...}}}})"
        )
    return entry
