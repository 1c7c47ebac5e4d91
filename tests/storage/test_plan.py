"""The 12-month simulation against hand calculations (pure: inventories built by hand, no clock)."""

from __future__ import annotations

import pytest

from mlcost_pl.storage import ObjectInfo, StoragePrices, classify, expand, inventory_from, parse_rules, price_groups, simulate

NOW = 1_800_000_000.0
DAY = 86400.0
M = 365 / 12  # days per month
AWS = StoragePrices.bundled().provider("aws")
STD, IA, GL = 0.023, 0.0125, 0.0036
CLASSIC = {
    "archive": {"prefix": "", "transitions": [{"days": 90, "storage_class": "STANDARD_IA"}, {"days": 180, "storage_class": "GLACIER"}]},
    "expire_temporary": {"prefix": "temporary/", "expire_days": 365},
    "abort_multipart": {"prefix": "", "abort_multipart_days": 7},
}
SIZES = {"models/a.bin": 1_000_000, "temporary/t.bin": 500_000, "logs/small.txt": 1_000}
AGES = {"models/a.bin": 100, "temporary/t.bin": 10, "logs/small.txt": 400}


def classic_by_hand() -> tuple[float, float]:
    """(12 months without rules, with the classic rules) in USD, worked out object by object."""
    s1, s2, s3 = SIZES["models/a.bin"], SIZES["temporary/t.bin"], SIZES["logs/small.txt"]
    glacier = lambda s: ((s + 32768) * GL + 8192 * STD) / 1e9 / M  # noqa: E731 - USD per day in GLACIER
    baseline = (s1 + s2 + s3) / 1e9 * STD * 12
    # a.bin (100 days old): IA now (fee), GLACIER after 80 more days (fee; 80 >= IA's 30-day minimum).
    a = 80 * s1 / 1e9 * IA / M + 285 * glacier(s1) + (0.01 + 0.03) / 1000
    # t.bin (10 days old): STANDARD 80 days, IA 90 days, GLACIER 185 days (>= its 90-day minimum), expired at 355.
    t = 80 * s2 / 1e9 * STD / M + 90 * s2 / 1e9 * IA / M + 185 * glacier(s2) + (0.01 + 0.03) / 1000
    # small.txt: under S3's 128 KiB transition minimum, stays in STANDARD.
    small = s3 / 1e9 * STD * 12
    return baseline, a + t + small


def inventory(sizes=SIZES, ages=AGES, classes=None):
    objs = [ObjectInfo(k, s, NOW - ages[k] * DAY, (classes or {}).get(k, "STANDARD")) for k, s in sizes.items()]
    return inventory_from(objs, now=NOW, provider="aws")


def plan_of(rules, inv, **kwargs):
    classified = classify(inv)
    return simulate(classified, expand(parse_rules(rules, AWS), classified), AWS, **kwargs)


def test_report_prices_each_group_at_its_current_class():
    inv = inventory(classes={"logs/small.txt": "GLACIER"})
    groups = price_groups(classify(inv), AWS)
    assert groups["total"]["bytes"] == sum(SIZES.values()) and groups["total"]["objects"] == 3
    assert groups["temporary"]["usd_per_month"] == pytest.approx(500_000 / 1e9 * STD)
    assert groups["logs"]["usd_per_month"] == pytest.approx(((1000 + 32768) * GL + 8192 * STD) / 1e9)
    assert groups["logs"]["classes"] == {"GLACIER": 1000}


def test_classic_plan_matches_the_hand_calculation():
    plan = plan_of(CLASSIC, inventory())
    baseline, with_rules = classic_by_hand()
    assert plan.baseline_total == pytest.approx(baseline, rel=1e-6)
    assert plan.with_rules_total == pytest.approx(with_rules, rel=0.01)
    assert plan.baseline[0] == pytest.approx(baseline / 12)
    cumulative_without, cumulative_with = plan.cumulative()
    assert cumulative_without[-1] == pytest.approx(plan.baseline_total) and cumulative_with[-1] < cumulative_without[-1]
    by_name = {r.name: r for r in plan.rules}
    assert by_name["archive"].net_usd < 0 and not by_name["archive"].costs_more
    assert by_name["archive"].delta["transitions"] == pytest.approx(2 * (0.01 + 0.03) / 1000)
    assert by_name["expire_temporary"].objects == 1 and by_name["expire_temporary"].net_usd < 0
    assert by_name["abort_multipart"].net_usd == 0


def test_early_expiry_bills_the_minimum_duration():
    rules = {"ia": {"prefix": "", "transitions": [{"days": 30, "storage_class": "STANDARD_IA"}], "expire_days": 40}}
    size = 10_000_000
    plan = plan_of(rules, inventory({"x": size}, {"x": 0}))
    charge = (30 - 10) * size / 1e9 * IA / M  # expired after 10 of IA's 30 minimum days
    assert sum(plan.components["min_duration"]) == pytest.approx(charge)
    assert plan.with_rules_total == pytest.approx(30 * size / 1e9 * STD / M + 10 * size / 1e9 * IA / M + charge + 0.01 / 1000)


def test_a_rule_that_costs_more_than_it_saves_is_flagged():
    # A dataset read in full every month: Glacier IR's retrieval fee ($0.03/GB) exceeds its storage saving.
    sizes, ages = {"ds/index.json": 200_000, "ds/chunk-0.bin": 50_000_000}, {"ds/index.json": 10, "ds/chunk-0.bin": 10}
    rules = {"cold_data": {"prefix": "ds/", "transitions": [{"days": 0, "storage_class": "GLACIER_IR"}]}}
    plan = plan_of(rules, inventory(sizes, ages), reads={"dataset": 1.0})
    (impact,) = plan.rules
    assert impact.costs_more and impact.delta["retrieval"] > -impact.delta["storage"] > 0
    assert plan.saving_total < 0
    saved_per_month = sum(sizes.values()) / 1e9 * (STD - 0.004)
    assert impact.delta["retrieval"] == pytest.approx(12 * sum(sizes.values()) / 1e9 * 0.03)
    assert -impact.delta["storage"] == pytest.approx(12 * saved_per_month, rel=0.01)


def test_bad_horizon_and_reads_are_named():
    inv = inventory()
    with pytest.raises(ValueError, match="months must be"):
        plan_of(CLASSIC, inv, months=0)
    with pytest.raises(ValueError, match=r"reads.datasets: not a group"):
        plan_of(CLASSIC, inv, reads={"datasets": 1.0})
