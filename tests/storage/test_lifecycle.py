"""Rule parsing, expansion, safety checks and the three clouds' renderings (pure)."""

from __future__ import annotations

import pytest

from mlcost_pl.storage import (
    ObjectInfo,
    StoragePrices,
    check_live_checkpoints,
    check_overlaps,
    classify,
    expand,
    inventory_from,
    merge_s3,
    parse_rules,
    to_azure,
    to_gcs,
    to_s3,
)
from tests.storage.test_plan import CLASSIC

NOW = 1_800_000_000.0
PRICES = StoragePrices.bundled()
AWS, GCP, AZURE = (PRICES.provider(p) for p in ("aws", "gcp", "azure"))


def checkpoint_inventory(idle_days: float):
    """One run with three committed checkpoints and one torn save, last written ``idle_days`` ago."""
    objs = []
    for i, step in enumerate((10, 20, 30)):
        name = f"step-{step:09d}-{1_700_000_000_000 + i:013d}"
        for f in ("checkpoint.ckpt", "MANIFEST.json"):
            objs.append(ObjectInfo(f"ckpt/{name}/{f}", 1000, NOW - (idle_days + 30 - i) * 86400, "STANDARD"))
    objs.append(ObjectInfo("ckpt/step-000000040-1700000000009/checkpoint.ckpt", 10, NOW - (idle_days + 40) * 86400, "STANDARD"))
    objs.append(ObjectInfo("ckpt/progress.json", 10, NOW - idle_days * 86400, "STANDARD"))
    return classify(inventory_from(objs, now=NOW, provider="aws"), keep_last=2, live_days=7)


def test_select_rules_expand_to_one_prefix_per_folder():
    c = checkpoint_inventory(idle_days=1)
    for select, expected in (("checkpoints_not_newest", 2), ("checkpoints_beyond_keep_last", 1), ("checkpoints_uncommitted", 1)):
        rules = expand(parse_rules({"old": {"select": select, "expire_days": 30}}, AWS), c)
        assert len(rules) == expected and all(r.id.startswith("mlcost-old-") and r.prefix.startswith("ckpt/step-") for r in rules)
        assert c.runs[0].newest_committed.prefix not in {r.prefix for r in rules}
        check_live_checkpoints(rules, c)


def test_expiring_the_newest_checkpoint_of_a_live_run_is_refused():
    rules = expand(parse_rules({"wipe": {"prefix": "ckpt/", "expire_days": 400}}, AWS), checkpoint_inventory(idle_days=1))
    with pytest.raises(ValueError, match=r"rule wipe would expire ckpt/step-000000030-.* newest committed checkpoint of the live run ckpt/"):
        check_live_checkpoints(rules, checkpoint_inventory(idle_days=1))
    check_live_checkpoints(rules, checkpoint_inventory(idle_days=30))  # an idle run may be expired


@pytest.mark.parametrize(("rules", "match"), [
    ({"a": {"prefix": "", "transitions": [{"days": 10, "storage_class": "STANDARD_IA"}]}}, r"rules.a.transitions\[0\]: S3 moves objects to STANDARD_IA no earlier than 30"),
    ({"a": {"transitions": [{"days": 90, "storage_class": "GLACIER"}, {"days": 120, "storage_class": "STANDARD_IA"}]}}, r"rules.a.transitions must go to colder"),
    ({"a": {"transitions": [{"days": 90, "storage_class": "NOPE"}]}}, r"rules.a.transitions\[0\].storage_class: storage class 'NOPE' is not in the aws price table"),
    ({"a": {"expire_days": -1}}, r"rules.a.expire_days must be a whole number"),
    ({"a": {"prefix": "x/"}}, r"rules.a has no action"),
    ({"a": {"prefix": "/x", "expire_days": 3}}, r"rules.a.prefix must be"),
    ({"a": {"select": "latest", "expire_days": 3}}, r"rules.a.select must be one of"),
    ({"a": {"expire_days": 3, "delete": True}}, r"rules.a: unknown field"),
    ({"a": {"transitions": [{"days": 90, "storage_class": "GLACIER"}], "expire_days": 60}}, r"rules.a.expire_days=60 must be after"),
])
def test_bad_rules_are_one_line(rules, match):
    with pytest.raises(ValueError, match=match):
        parse_rules(rules, AWS)


def test_overlapping_rules_are_an_error():
    rules = parse_rules({"a": {"prefix": "data/", "expire_days": 30}, "b": {"prefix": "data/tmp/", "expire_days": 60}}, AWS)
    with pytest.raises(ValueError, match=r"overlapping rules: mlcost-a .* and mlcost-b .* both expiration"):
        check_overlaps(expand(rules, checkpoint_inventory(1)))
    classic = expand(parse_rules(CLASSIC, AWS), checkpoint_inventory(1))
    check_overlaps(classic)  # transitions on everything + expiration on temporary/: different actions
    existing = [{"ID": "team-archive", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
                 "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}]
    with pytest.raises(ValueError, match=r"mlcost-archive .* and team-archive \(already in the bucket, prefix 'logs/'\) both transition"):
        merge_s3(existing, classic)
    merged = merge_s3(existing, classic, key_prefix="runs/")  # ours live under runs/: no overlap with logs/
    assert merged.kept == ["team-archive"] and merged.rules[0] == existing[0]


def test_s3_gcs_and_azure_renderings():
    rules = expand(parse_rules(CLASSIC, AWS), checkpoint_inventory(1))
    s3 = {r["ID"]: r for r in to_s3(rules, "p/")}
    assert s3["mlcost-archive"]["Transitions"] == [{"Days": 90, "StorageClass": "STANDARD_IA"}, {"Days": 180, "StorageClass": "GLACIER"}]
    assert s3["mlcost-expire_temporary"] == {"ID": "mlcost-expire_temporary", "Status": "Enabled", "Filter": {"Prefix": "p/temporary/"},
                                             "Expiration": {"Days": 365}}
    assert s3["mlcost-abort_multipart"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}

    gcs_rules = expand(parse_rules(CLASSIC, GCP), checkpoint_inventory(1))
    gcs = to_gcs(gcs_rules, GCP)["lifecycle"]["rule"]
    assert gcs[0] == {"action": {"type": "SetStorageClass", "storageClass": "NEARLINE"}, "condition": {"age": 90, "matchesStorageClass": ["STANDARD"]}}
    assert gcs[1]["action"]["storageClass"] == "ARCHIVE" and gcs[1]["condition"]["matchesStorageClass"] == ["STANDARD", "NEARLINE", "COLDLINE"]
    assert {"action": {"type": "Delete"}, "condition": {"age": 365, "matchesPrefix": ["temporary/"]}} in gcs

    azure = to_azure(expand(parse_rules(CLASSIC, AZURE), checkpoint_inventory(1)), AZURE, container="models")["rules"]
    assert azure[0]["name"] == "mlcostarchive"
    assert azure[0]["definition"]["actions"]["baseBlob"] == {"tierToCool": {"daysAfterModificationGreaterThan": 90},
                                                             "tierToArchive": {"daysAfterModificationGreaterThan": 180}}
    assert azure[1]["definition"]["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": ["models/temporary/"]}
    assert len(azure) == 2  # Azure drops uncommitted blocks itself: no multipart rule
