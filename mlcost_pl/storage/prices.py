"""The storage price table: a bundled, dated YAML of storage classes per cloud that users override or extend.

Pure Python (PyYAML + fsspec), like :mod:`mlcost_pl.cost.catalog`: no Lightning, no torch.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import yaml

from mlcost_pl.errors import MissingInputError, UserInputError
from mlcost_pl.utils.fs import get_fs

GB = 1e9
DAYS_PER_MONTH = 365.0 / 12
PROVIDERS = ("aws", "gcp", "azure")
_NUMBERS = ("usd_per_gb_month", "min_days", "transition_per_1000", "retrieval_per_gb", "min_object_bytes", "overhead_bytes",
            "overhead_standard_bytes", "rank")
_FIELDS = (*_NUMBERS, "same_as")


class UnknownStorageClassError(ValueError):
    """A storage class that is not in the provider's price table; the message lists the known ones."""


@dataclass(frozen=True)
class StorageClassPrice:
    """What one storage class of one cloud costs.

    Attributes:
        name: the cloud's class name (``STANDARD_IA``, ``NEARLINE``, ``Cool``).
        usd_per_gb_month: storage per GB-month (GB = 10^9 bytes).
        min_days: minimum storage duration; leaving earlier bills the remaining days.
        transition_per_1000: USD per 1,000 objects a lifecycle rule moves into this class.
        retrieval_per_gb: USD per GB read out of this class.
        min_object_bytes: smaller objects are billed as this size.
        overhead_bytes: extra bytes billed per object at this class's rate.
        overhead_standard_bytes: extra bytes billed per object at the provider's default class rate.
        rank: 0 = hottest; rules only move objects to a higher rank.
        same_as: classes of other clouds this one stands in for.
    """

    name: str
    usd_per_gb_month: float
    min_days: float = 0.0
    transition_per_1000: float = 0.0
    retrieval_per_gb: float = 0.0
    min_object_bytes: float = 0.0
    overhead_bytes: float = 0.0
    overhead_standard_bytes: float = 0.0
    rank: float = 0.0
    same_as: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ProviderPrices:
    """The classes of one cloud.

    Attributes:
        name: ``aws``, ``gcp`` or ``azure``.
        default_class: the class of an object whose store reports none (a local folder priced as this cloud).
        min_transition_bytes: lifecycle rules leave smaller objects where they are (S3: 128 KiB).
        classes: ``{class name: StorageClassPrice}``.
    """

    name: str
    default_class: str
    min_transition_bytes: float
    classes: dict[str, StorageClassPrice]

    def lookup(self, storage_class: str) -> StorageClassPrice:
        """The class ``storage_class``, or the class of this cloud that ``same_as`` lists it under.

        Raises:
            UnknownStorageClassError: (a ``ValueError``) naming the class, the cloud and the classes it has.
        """
        if storage_class in self.classes:
            return self.classes[storage_class]
        for price in self.classes.values():
            if storage_class in price.same_as:
                return price
        near = difflib.get_close_matches(str(storage_class), list(self.classes), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise UnknownStorageClassError(
            f"storage class {storage_class!r} is not in the {self.name} price table{hint}; it has {', '.join(self.classes)}. "
            f"Add it with +prices.{self.name}.classes.{storage_class}.usd_per_gb_month=<USD>"
        )


def check_fields(value: Any, allowed: tuple[str, ...], where: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping whose keys are all ``allowed``; else a ``ValueError`` naming ``where``."""
    if not isinstance(value, Mapping):
        raise UserInputError(f"{where} must be a mapping of {', '.join(allowed)}, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise UserInputError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(allowed)}")
    return value


def _class(name: str, fields: Any, base: StorageClassPrice | None, where: str) -> StorageClassPrice:
    check_fields(fields, _FIELDS, f"{where}.{name}")
    values: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "same_as":
            values[key] = tuple(str(v) for v in (value or ()))
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise UserInputError(f"{where}.{name}.{key} must be a number >= 0, got {value!r}")
        values[key] = float(value)
    if base is None:
        if "usd_per_gb_month" not in values:
            raise UserInputError(f"{where}.{name}: a new storage class needs usd_per_gb_month")
        return StorageClassPrice(name=name, **values)
    return StorageClassPrice(**{**base.__dict__, **values})


def _provider(name: str, data: Any, base: ProviderPrices | None, where: str) -> ProviderPrices:
    check_fields(data, ("classes", "default_class", "min_transition_bytes"), f"{where}.{name}")
    classes = dict(base.classes) if base else {}
    raw_classes = data.get("classes") or {}
    if not isinstance(raw_classes, Mapping):
        raise UserInputError(f"{where}.{name}.classes must be a mapping of class name -> fields")
    for cls, fields in raw_classes.items():
        classes[str(cls)] = _class(str(cls), fields, classes.get(str(cls)), f"{where}.{name}.classes")
    default = str(data.get("default_class", base.default_class if base else ""))
    if default not in classes:
        raise UserInputError(f"{where}.{name}.default_class={default!r} is not one of its classes ({', '.join(classes)})")
    min_bytes = data.get("min_transition_bytes", base.min_transition_bytes if base else 0)
    if isinstance(min_bytes, bool) or not isinstance(min_bytes, (int, float)) or min_bytes < 0:
        raise UserInputError(f"{where}.{name}.min_transition_bytes must be a number >= 0, got {min_bytes!r}")
    return ProviderPrices(name, default, float(min_bytes), classes)


@functools.lru_cache(maxsize=1)
def _bundled_data() -> dict[str, Any]:
    return yaml.safe_load(resources.files("mlcost_pl.storage").joinpath("prices.yaml").read_text())


@dataclass(frozen=True)
class StoragePrices:
    """What each storage class of each cloud costs (``StoragePrices.load()``: the bundled, dated ``prices.yaml`` with
    a file's and the caller's overrides merged on top, field by field).

    Args:
        providers: ``{"aws" | "gcp" | "azure" | ...: ProviderPrices}``.
        as_of: when the list prices were read (the YAML's ``as_of``); reports print it.
        source: the price pages they were read from.

    Example:
        >>> prices = StoragePrices.load(overrides={"aws": {"classes": {"STANDARD": {"usd_per_gb_month": 0.021}}}})
        >>> prices.provider("aws").lookup("STANDARD").usd_per_gb_month
        0.021
        >>> prices.provider("gcp").lookup("STANDARD_IA").name
        'NEARLINE'
    """

    providers: dict[str, ProviderPrices]
    as_of: str | None = None
    source: str | None = None

    @classmethod
    def bundled(cls) -> StoragePrices:
        """The table shipped with mlcost_pl (``mlcost_pl/storage/prices.yaml``)."""
        data = _bundled_data()
        providers = {name: _provider(name, body, None, "prices.yaml") for name, body in data["providers"].items()}
        return cls(providers, as_of=str(data.get("as_of")), source=data.get("source"))

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, file: str | None = None) -> StoragePrices:
        """The bundled table, then the providers of ``file`` (YAML/JSON, local or fsspec URL), then ``overrides``."""
        table = cls.bundled().with_file(file) if file else cls.bundled()
        return table.with_overrides(overrides) if overrides else table

    def with_overrides(self, overrides: Mapping[str, Any], where: str = "prices") -> StoragePrices:
        """A new table with ``{provider: {classes: {CLASS: {field: value}}, ...}}`` merged in field by field.

        Raises:
            ValueError: not a mapping, an unknown field, a negative or non-numeric price (the message names it).
        """
        if not isinstance(overrides, Mapping):
            raise UserInputError(f"{where} must be a mapping of provider -> {{classes: ...}}, got {type(overrides).__name__}")
        if isinstance(overrides.get("providers"), Mapping):
            overrides = overrides["providers"]
        providers = dict(self.providers)
        for name, body in overrides.items():
            providers[str(name)] = _provider(str(name), body, providers.get(str(name)), where)
        return replace(self, providers=providers)

    def with_file(self, url: str) -> StoragePrices:
        """A new table with the providers of a YAML (or JSON, a subset of YAML) file at a path or fsspec URL merged in.

        Raises:
            FileNotFoundError: nothing at ``url`` (named).
            ValueError: the file does not parse, or holds a bad entry (named).
        """
        fs, path = get_fs(str(url))
        try:
            data = yaml.safe_load(fs.cat_file(path))
        except FileNotFoundError:
            raise MissingInputError(f"prices_file={url}: no such file") from None
        except yaml.YAMLError as err:
            raise UserInputError(f"prices_file={url} is not YAML/JSON: {' '.join(str(err).split())}") from None
        return self.with_overrides(data or {}, where=f"prices_file {url}")

    def provider(self, name: str) -> ProviderPrices:
        """The classes of cloud ``name``.

        Raises:
            ValueError: ``name`` is not in the table (names the ones that are).
        """
        if name not in self.providers:
            raise UserInputError(f"provider={name!r} is not in the storage price table; it has {', '.join(self.providers)}")
        return self.providers[name]
