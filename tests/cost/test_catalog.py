"""The price catalog: bundled prices, overrides from dict and file, custom entry, near-match errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mlcost_pl.cost import PriceCatalog, UnknownInstanceError, resolve_instance


def test_bundled_catalog_is_dated_and_covers_three_clouds():
    catalog = PriceCatalog.bundled()
    assert catalog.as_of and catalog.source
    clouds = {e.cloud for e in catalog.instances.values()}
    assert {"aws", "gcp", "azure", "local"} <= clouds
    p4d = catalog.lookup("p4d.24xlarge")
    assert p4d.gpus == 8 and p4d.gpu.startswith("A100") and 0 < p4d.spot < p4d.on_demand
    for entry in catalog.instances.values():
        if entry.name != "custom":
            assert entry.on_demand > 0 and (entry.spot is None or entry.spot < entry.on_demand), entry


def test_lookup_is_case_insensitive():
    assert PriceCatalog.bundled().lookup("standard_nc6s_v3").name == "Standard_NC6s_v3"


def test_unknown_instance_lists_near_matches():
    with pytest.raises(UnknownInstanceError, match=r"'p4d\.24xlarg'.*Did you mean: p4d\.24xlarge") as info:
        resolve_instance("p4d.24xlarg")
    assert isinstance(info.value, ValueError)


def test_overrides_update_fields_and_add_instances():
    catalog = PriceCatalog.load(overrides={"g5.xlarge": {"spot": 0.3}, "my-box": {"on_demand": 1.5, "gpus": 2, "cloud": "onprem"}})
    g5 = catalog.lookup("g5.xlarge")
    assert g5.spot == 0.3 and g5.on_demand == PriceCatalog.bundled().lookup("g5.xlarge").on_demand
    assert catalog.lookup("my-box").gpus == 2 and catalog.lookup("my-box").cloud == "onprem"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"g5.xlarge": {"ondemand": 1.0}}, r"g5\.xlarge: unknown field.*ondemand"),
        ({"g5.xlarge": {"spot": -1}}, r"g5\.xlarge\.spot must be >= 0"),
        ({"g5.xlarge": {"on_demand": "cheap"}}, r"g5\.xlarge\.on_demand must be a number"),
        ({"new-box": {"gpus": 1}}, r"new-box: a new instance needs an on_demand price"),
        ({"g5.xlarge": 3}, r"g5\.xlarge: expected a mapping"),
    ],
)
def test_bad_overrides_name_the_entry(overrides, match):
    with pytest.raises(ValueError, match=match):
        PriceCatalog.load(overrides=overrides)


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_overrides_from_file(tmp_path, suffix):
    data = {"instances": {"custom": {"on_demand": 0.25}, "g6.xlarge": {"on_demand": 0.7}}}
    path = tmp_path / f"prices.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    entry = resolve_instance("custom", prices_file=str(path))
    assert entry.on_demand == 0.25
    assert resolve_instance("g6.xlarge", prices_file=str(path)).on_demand == 0.7


def test_missing_or_broken_prices_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        resolve_instance("custom", usd_per_hour=1.0, prices_file=str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("instances: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml"):
        resolve_instance("custom", usd_per_hour=1.0, prices_file=str(bad))


def test_custom_needs_a_price_and_explicit_prices_win():
    with pytest.raises(ValueError, match="usd_per_hour"):
        resolve_instance("custom")
    entry = resolve_instance("custom", usd_per_hour=0.12, spot_usd_per_hour=0.05)
    assert (entry.on_demand, entry.spot, entry.cloud) == (0.12, 0.05, "local")
    assert resolve_instance("g5.xlarge", usd_per_hour=0.9).on_demand == 0.9
    with pytest.raises(ValueError, match="usd_per_hour"):
        resolve_instance("custom", usd_per_hour=-1.0)


def test_cost_package_imports_neither_lightning_nor_torch():
    code = "import sys, mlcost_pl.cost; print(sorted(m for m in ('lightning', 'torch', 'lightning.pytorch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
