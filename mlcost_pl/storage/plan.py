"""Price an inventory now, and simulate lifecycle rules over it month by month.

Pure Python: no clock (ages come from the inventory), no network, no Lightning, no torch.

The model, per object (what the clouds bill):

- storage: billable bytes x the class's USD per GB-month, pro rata by day (a month = 365/12 days). Billable bytes are
  ``max(size, min_object_bytes) + overhead_bytes`` at the class's rate, plus ``overhead_standard_bytes`` at the
  provider's default class rate (S3 Glacier's per-object index and metadata).
- a rule's transition happens when the object's age (days since last modification) reaches its ``days``, at day 0 of
  the simulation if it is already older; when several transitions are due at once only the coldest happens (one
  fee), as S3 does. Objects under the provider's ``min_transition_bytes`` (S3: 128 KiB) stay where they are.
- a transition costs ``transition_per_1000 / 1000`` of the destination class; leaving a class (transition or
  expiration) before its ``min_days`` bills the remaining days at its rate (an object is taken to have been in its
  current class since its last modification).
- an expiration removes the object (free); an expiration due at the same time as a transition wins.
- retrieval: ``reads[group]`` = the fraction of the group's bytes read back per month, billed at the class the
  object is in mid-month.
- the inventory does not grow: new objects written during the 12 months are not simulated.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.storage.classify import GROUPS, Classification
from mlcost_pl.storage.lifecycle import LifecycleRule
from mlcost_pl.storage.prices import DAYS_PER_MONTH, GB, ProviderPrices, StorageClassPrice

COMPONENTS = ("storage", "transitions", "min_duration", "retrieval")


def billable_gb(size: int, cls: StorageClassPrice) -> float:
    """GB billed at ``cls``'s own rate for an object of ``size`` bytes."""
    return (max(float(size), cls.min_object_bytes) + cls.overhead_bytes) / GB


def usd_per_month(size: int, cls: StorageClassPrice, provider: ProviderPrices) -> float:
    """What an object of ``size`` bytes costs per month in ``cls`` (including overhead billed at the default class)."""
    usd = billable_gb(size, cls) * cls.usd_per_gb_month
    if cls.overhead_standard_bytes:
        usd += cls.overhead_standard_bytes / GB * provider.lookup(provider.default_class).usd_per_gb_month
    return usd


def current_class(storage_class: str | None, provider: ProviderPrices) -> StorageClassPrice:
    """The price of the class an object reports (the provider's default class when it reports none).

    Raises:
        UnknownStorageClassError: the price table lacks the class (a ``ValueError`` naming it).
    """
    return provider.lookup(storage_class or provider.default_class)


def price_groups(classified: Classification, provider: ProviderPrices) -> dict[str, dict[str, Any]]:
    """Per group: ``objects``, ``bytes``, ``usd_per_month`` at the objects' current classes, and ``classes``
    (``{class: bytes}``). Every group of :data:`GROUPS` is present (zeros when empty), plus ``total``."""
    out: dict[str, dict[str, Any]] = {g: {"objects": 0, "bytes": 0, "usd_per_month": 0.0, "classes": {}} for g in (*GROUPS, "total")}
    for obj in classified.inventory.objects:
        cls = current_class(obj.storage_class, provider)
        usd = usd_per_month(obj.size, cls, provider)
        for name in (classified.groups[obj.key], "total"):
            row = out[name]
            row["objects"] += 1
            row["bytes"] += obj.size
            row["usd_per_month"] += usd
            row["classes"][cls.name] = row["classes"].get(cls.name, 0) + obj.size
    return out


@dataclass
class _Costs:
    months: int
    by_component: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_component = {c: [0.0] * self.months for c in COMPONENTS}

    def add(self, component: str, day: float, usd: float) -> None:
        month = min(self.months - 1, int(day // DAYS_PER_MONTH))
        self.by_component[component][month] += usd

    def add_span(self, start: float, end: float, usd_per_day: float) -> None:
        """Storage at ``usd_per_day`` over days ``[start, end)``, split across months."""
        m = int(start // DAYS_PER_MONTH)
        while start < end and m < self.months:
            stop = min(end, (m + 1) * DAYS_PER_MONTH)
            self.by_component["storage"][m] += (stop - start) * usd_per_day
            start, m = stop, m + 1

    def monthly(self) -> list[float]:
        return [sum(self.by_component[c][m] for c in COMPONENTS) for m in range(self.months)]

    def totals(self) -> dict[str, float]:
        return {c: sum(v) for c, v in self.by_component.items()}


def _simulate(classified: Classification, rules: Sequence[LifecycleRule], provider: ProviderPrices, months: int,
              reads: Mapping[str, float]) -> _Costs:
    costs = _Costs(months)
    horizon = months * DAYS_PER_MONTH
    for obj in classified.inventory.objects:
        age = classified.inventory.age_days(obj)
        cls = current_class(obj.storage_class, provider)
        entered = -age
        transitions: dict[float, StorageClassPrice] = {}
        expire_at = None
        for rule in rules:
            if not rule.enabled or not rule.matches(obj.key):
                continue
            if obj.size >= provider.min_transition_bytes:
                for days, name in rule.transitions:
                    at = max(0.0, days - age)
                    target = provider.lookup(name)
                    if at not in transitions or target.rank > transitions[at].rank:
                        transitions[at] = target
            if rule.expire_days is not None:
                at = max(0.0, rule.expire_days - age)
                expire_at = at if expire_at is None else min(expire_at, at)
        read_fraction = float(reads.get(classified.groups[obj.key], 0.0))
        t = 0.0
        segments: list[tuple[float, float, StorageClassPrice]] = []
        for at in sorted(transitions):
            target = transitions[at]
            if at >= horizon or (expire_at is not None and at >= expire_at) or target.rank <= cls.rank:
                continue
            segments.append((t, at, cls))
            if at - entered < cls.min_days:
                costs.add("min_duration", at, (cls.min_days - (at - entered)) * usd_per_month(obj.size, cls, provider) / DAYS_PER_MONTH)
            costs.add("transitions", at, target.transition_per_1000 / 1000)
            t, cls, entered = at, target, at
        end = horizon if expire_at is None else min(horizon, expire_at)
        segments.append((t, end, cls))
        if expire_at is not None and expire_at < horizon and expire_at - entered < cls.min_days:
            costs.add("min_duration", expire_at, (cls.min_days - (expire_at - entered)) * usd_per_month(obj.size, cls, provider) / DAYS_PER_MONTH)
        for start, stop, seg_cls in segments:
            if stop > start:
                costs.add_span(start, stop, usd_per_month(obj.size, seg_cls, provider) / DAYS_PER_MONTH)
        if read_fraction:
            for m in range(months):
                mid = (m + 0.5) * DAYS_PER_MONTH
                if mid >= end:
                    break
                in_cls = next((c for s, e, c in segments if s <= mid < e), cls)
                costs.add("retrieval", mid, read_fraction * obj.size / GB * in_cls.retrieval_per_gb)
    return costs


@dataclass
class RuleImpact:
    """What one rule of the rule set changes over the horizon (all the rules vs all but this one).

    Attributes:
        name: the rule's name in the rule set.
        objects: objects its (expanded) filters select.
        bytes: bytes they hold.
        net_usd: cost with the rule minus cost without it over the horizon (negative = it saves).
        delta: the same difference per component (``storage``, ``transitions``, ``min_duration``, ``retrieval``).
        costs_more: the rule costs more than it saves (``net_usd`` above a millionth of a dollar: float noise and
            minimum-duration charges that only pre-pay storage beyond the horizon stay unflagged at that scale).
    """

    name: str
    objects: int
    bytes: int
    net_usd: float
    delta: dict[str, float]

    @property
    def costs_more(self) -> bool:
        return self.net_usd > 1e-6


@dataclass
class Plan:
    """The 12-month (``months``) simulation of a rule set over an inventory.

    Attributes:
        months: the horizon in months.
        baseline: USD per month without the rules.
        with_rules: USD per month with the rules (storage, fees and charges of that month).
        components: ``{component: [USD per month]}`` with the rules.
        baseline_components: the same without the rules.
        rules: per rule, what it changes.
    """

    months: int
    baseline: list[float]
    with_rules: list[float]
    components: dict[str, list[float]]
    baseline_components: dict[str, list[float]]
    rules: list[RuleImpact]

    @property
    def baseline_total(self) -> float:
        return sum(self.baseline)

    @property
    def with_rules_total(self) -> float:
        return sum(self.with_rules)

    @property
    def saving_total(self) -> float:
        """USD saved over the horizon (negative = the rule set costs more)."""
        return self.baseline_total - self.with_rules_total

    def cumulative(self) -> tuple[list[float], list[float]]:
        """Cumulative USD at the end of each month: ``(baseline, with rules)``."""
        out: tuple[list[float], list[float]] = ([], [])
        for series, acc in ((self.baseline, out[0]), (self.with_rules, out[1])):
            total = 0.0
            for usd in series:
                total += usd
                acc.append(total)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``plan.json``)."""
        return {
            "months": self.months,
            "usd_per_month_now": self.baseline[0] if self.baseline else 0.0,
            "usd_per_month_with_rules_last_month": self.with_rules[-1] if self.with_rules else 0.0,
            "usd_total_without_rules": self.baseline_total,
            "usd_total_with_rules": self.with_rules_total,
            "usd_saved": self.saving_total,
            "monthly": [{"month": m + 1, "without_rules": b, "with_rules": w,
                         **{c: self.components[c][m] for c in COMPONENTS}}
                        for m, (b, w) in enumerate(zip(self.baseline, self.with_rules))],
            "rules": [{"name": r.name, "objects": r.objects, "bytes": r.bytes, "net_usd": r.net_usd,
                       "costs_more_than_it_saves": r.costs_more, **{f"delta_{c}": v for c, v in r.delta.items()}}
                      for r in self.rules],
        }


def simulate(classified: Classification, rules: Sequence[LifecycleRule], provider: ProviderPrices, months: int = 12,
             reads: Mapping[str, float] | None = None) -> Plan:
    """Simulate ``rules`` over ``classified``'s inventory for ``months`` months (see the module docstring).

    Args:
        classified: from :func:`mlcost_pl.storage.classify.classify`.
        rules: expanded rules (:func:`mlcost_pl.storage.lifecycle.expand`), prefixes relative to the scanned URL.
        provider: the cloud's price table.
        months: horizon in months (>= 1).
        reads: ``{group: fraction of its bytes read per month}`` for retrieval fees (default: nothing read).

    Raises:
        ValueError: ``months < 1``, a bad ``reads`` entry, or an object/rule class the price table lacks (named).
    """
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise UserInputError(f"months must be an integer >= 1, got {months!r}")
    reads = dict(reads or {})
    for group, fraction in reads.items():
        if group not in GROUPS:
            raise UserInputError(f"reads.{group}: not a group; groups are {', '.join(GROUPS)}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or fraction < 0:
            raise UserInputError(f"reads.{group} must be a fraction of the group's bytes read per month (>= 0), got {fraction!r}")
    base = _simulate(classified, [], provider, months, reads)
    full = _simulate(classified, rules, provider, months, reads)
    impacts = []
    full_totals = full.totals()
    for name in dict.fromkeys(r.source or r.id for r in rules):
        mine = [r for r in rules if (r.source or r.id) == name]
        others = [r for r in rules if (r.source or r.id) != name]
        without = _simulate(classified, others, provider, months, reads).totals()
        selected = [o for o in classified.inventory.objects if any(r.matches(o.key) for r in mine)]
        delta = {c: full_totals[c] - without[c] for c in COMPONENTS}
        impacts.append(RuleImpact(name, len(selected), sum(o.size for o in selected), sum(delta.values()), delta))
    return Plan(months, base.monthly(), full.monthly(), full.by_component, base.by_component, impacts)


def plot_cumulative(plan: Plan, title: str = "") -> bytes:
    """A PNG (bytes) of cumulative cost over the horizon, with and without the rules (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    baseline, with_rules = plan.cumulative()
    months = list(range(0, plan.months + 1))
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(months, [0.0, *baseline], marker="o", label=f"without rules (${plan.baseline_total:,.4g})")
    ax.plot(months, [0.0, *with_rules], marker="o", label=f"with rules (${plan.with_rules_total:,.4g})")
    ax.set_xlabel("month")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title(title or f"storage cost over {plan.months} months")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
