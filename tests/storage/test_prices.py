"""The bundled storage price table and its overrides."""

from __future__ import annotations

import pytest

from mlcost_pl.storage import StoragePrices, UnknownStorageClassError

REQUIRED = {
    "aws": ("STANDARD", "STANDARD_IA", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"),
    "gcp": ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"),
    "azure": ("Hot", "Cool", "Cold", "Archive"),
}


def test_bundled_table_is_dated_and_complete():
    prices = StoragePrices.bundled()
    assert prices.as_of and prices.source
    for provider, classes in REQUIRED.items():
        table = prices.provider(provider)
        assert tuple(table.classes) == classes
        ranks = [table.classes[c].rank for c in classes]
        rates = [table.classes[c].usd_per_gb_month for c in classes]
        assert ranks == sorted(ranks) and rates == sorted(rates, reverse=True)  # colder = cheaper to keep
        assert table.classes[classes[-1]].min_days >= 90 and table.classes[classes[-1]].retrieval_per_gb > 0


def test_overrides_file_and_cross_cloud_names(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("aws:\n  classes:\n    STANDARD: {usd_per_gb_month: 0.02}\n    INTELLIGENT_TIERING: {usd_per_gb_month: 0.0125, rank: 1}\n")
    prices = StoragePrices.load(overrides={"aws": {"classes": {"GLACIER": {"min_days": 91}}}}, file=str(f))
    aws = prices.provider("aws")
    assert aws.lookup("STANDARD").usd_per_gb_month == 0.02 and aws.lookup("GLACIER").min_days == 91
    assert aws.lookup("INTELLIGENT_TIERING").rank == 1
    assert prices.provider("gcp").lookup("GLACIER").name == "ARCHIVE" and prices.provider("azure").lookup("NEARLINE").name == "Cool"


@pytest.mark.parametrize(("overrides", "match"), [
    ({"aws": {"classes": {"STANDARD": {"usd_per_gb_month": -1}}}}, r"prices.aws.classes.STANDARD.usd_per_gb_month must be"),
    ({"aws": {"classes": {"STANDARD": {"usd": 1}}}}, r"unknown field"),
    ({"aws": {"classes": {"NEW": {"rank": 1}}}}, r"NEW: a new storage class needs usd_per_gb_month"),
    ({"aws": {"default_class": "NOPE"}}, r"default_class='NOPE'"),
])
def test_bad_overrides_are_one_line(overrides, match):
    with pytest.raises(ValueError, match=match):
        StoragePrices.load(overrides=overrides)


def test_a_class_the_table_lacks_is_named():
    with pytest.raises(UnknownStorageClassError, match=r"'GLACIER_DEEP' is not in the aws price table.*DEEP_ARCHIVE"):
        StoragePrices.bundled().provider("aws").lookup("GLACIER_DEEP")
    with pytest.raises(ValueError, match=r"provider='ibm'"):
        StoragePrices.bundled().provider("ibm")


def test_prices_file_errors_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"prices_file=.*missing.yaml: no such file"):
        StoragePrices.load(file=str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("aws: [unclosed")
    with pytest.raises(ValueError, match=r"prices_file=.*bad.yaml is not YAML/JSON"):
        StoragePrices.load(file=str(bad))
