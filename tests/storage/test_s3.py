"""Against a real S3 API (moto's server on 127.0.0.1): scan, report totals, plan, apply round-trips and merges."""

from __future__ import annotations

import json
import urllib.request

import pytest

from mlcost_pl.checkpoint import manifest
from mlcost_pl.checkpoint.storage import CheckpointStorage
from mlcost_pl.storage import (
    StoragePrices,
    apply_s3,
    classify,
    expand,
    merge_s3,
    parse_rules,
    price_groups,
    read_s3_rules,
    s3_client,
    scan,
    simulate,
)
from tests.storage.test_plan import AGES, CLASSIC, SIZES, classic_by_hand

AWS = StoragePrices.bundled().provider("aws")


def put(bucket, key: str, size: int, **kwargs) -> None:
    bucket["client"].put_object(Bucket=bucket["name"], Key=key, Body=b"\0" * size, **kwargs)


def test_report_totals_are_byte_exact(bucket):
    store = CheckpointStorage(f"{bucket['url']}/runs/a/checkpoints", bucket["storage_options"])
    for step in (1, 2, 3):
        manifest.commit_checkpoint(store, {manifest.CKPT_FILE: b"w" * (10_000 * step)}, step)
    put(bucket, "runs/a/csv/metrics.csv", 1234)
    put(bucket, "archive/old.bin", 300_000, StorageClass="STANDARD_IA")
    inv = scan(f"{bucket['url']}/", bucket["storage_options"])
    listed = bucket["client"].list_objects_v2(Bucket=bucket["name"])["Contents"]
    assert inv.provider == "aws" and inv.bucket == bucket["name"] and inv.key_prefix == ""
    assert {o.key: o.size for o in inv.objects} == {o["Key"]: o["Size"] for o in listed}
    assert {o.key: o.storage_class for o in inv.objects}["archive/old.bin"] == "STANDARD_IA"

    groups = price_groups(classify(inv, keep_last=2), AWS)
    ckpt_bytes = sum(o["Size"] for o in listed if o["Key"].startswith("runs/a/checkpoints/"))
    assert (groups["checkpoint_kept"]["objects"], groups["checkpoint_old"]["objects"]) == (4, 2)  # 2 kept (checkpoint + MANIFEST each), 1 old
    assert groups["checkpoint_kept"]["bytes"] + groups["checkpoint_old"]["bytes"] == ckpt_bytes
    assert groups["logs"]["bytes"] == 1234 and groups["other"]["classes"] == {"STANDARD_IA": 300_000}
    assert groups["total"]["bytes"] == sum(o["Size"] for o in listed) and groups["total"]["objects"] == len(listed)
    assert groups["other"]["usd_per_month"] == pytest.approx(300_000 / 1e9 * 0.0125)

    sub = scan(f"{bucket['url']}/runs/a", bucket["storage_options"])
    assert sub.key_prefix == "runs/a/" and all(o.key.startswith(("checkpoints/", "csv/")) for o in sub.objects)


def test_plan_on_a_scanned_bucket_matches_the_hand_calculation(bucket):
    for key, size in SIZES.items():
        put(bucket, key, size)
    classified = classify(scan(bucket["url"], bucket["storage_options"]).with_ages(AGES))
    plan = simulate(classified, expand(parse_rules(CLASSIC, AWS), classified), AWS)
    baseline, with_rules = classic_by_hand()
    assert plan.baseline_total == pytest.approx(baseline, rel=0.01)
    assert plan.with_rules_total == pytest.approx(with_rules, rel=0.01)


def test_apply_round_trips_and_merges_with_an_existing_rule(bucket):
    client, name = s3_client(bucket["storage_options"]), bucket["name"]
    theirs = {"ID": "team-expire-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}}
    client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [theirs]})
    put(bucket, "models/a.bin", 1000)
    classified = classify(scan(bucket["url"], bucket["storage_options"]))
    ours = expand(parse_rules(CLASSIC, AWS), classified)

    merged = merge_s3(read_s3_rules(client, name), ours)
    assert apply_s3(client, name, merged, confirm=False) is None  # dry run
    assert read_s3_rules(client, name) == [theirs]

    after = apply_s3(client, name, merged, confirm=True)
    assert {r["ID"] for r in after} == {"team-expire-logs", "mlcost-archive", "mlcost-expire_temporary", "mlcost-abort_multipart"}
    by_id = {r["ID"]: r for r in after}
    assert by_id["team-expire-logs"] == theirs
    assert by_id["mlcost-archive"]["Transitions"] == [{"Days": 90, "StorageClass": "STANDARD_IA"}, {"Days": 180, "StorageClass": "GLACIER"}]
    assert by_id["mlcost-expire_temporary"]["Expiration"] == {"Days": 365}

    again = merge_s3(after, ours[:1])  # a second apply replaces what the first wrote, keeps theirs
    assert again.kept == ["team-expire-logs"] and sorted(again.replaced) == sorted(r.id for r in ours)
    assert {r["ID"] for r in apply_s3(client, name, again, confirm=True)} == {"team-expire-logs", "mlcost-archive"}
    assert [o.key for o in scan(bucket["url"], bucket["storage_options"]).objects] == ["models/a.bin"]  # nothing touched


def test_missing_and_unreachable_buckets_are_one_line(bucket):
    with pytest.raises(FileNotFoundError, match=r"url=s3://no-such-bucket-x: no such bucket or folder"):
        scan("s3://no-such-bucket-x", bucket["storage_options"])
    with pytest.raises(FileNotFoundError, match="no such bucket"):
        read_s3_rules(s3_client(bucket["storage_options"]), "no-such-bucket-x")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {**bucket["storage_options"], "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"},
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    with pytest.raises(ValueError, match=rf"url={bucket['url']}: cannot reach the store"):
        scan(bucket["url"], options)


def _moto_auth(endpoint: str, count: str) -> None:
    req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                 headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(req, timeout=10).read()


def test_no_permission_to_put_lifecycle_is_one_line_and_applies_nothing(bucket):
    import boto3

    iam = boto3.client("iam", endpoint_url=bucket["endpoint"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    user = f"reader-{bucket['name']}"
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
        "s3:ListBucket", "s3:GetObject", "s3:GetLifecycleConfiguration"]}]}
    iam.put_user_policy(UserName=user, PolicyName="read-only", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    put(bucket, "models/a.bin", 1000)
    options = {**bucket["storage_options"], "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    _moto_auth(bucket["endpoint"], "0")
    try:
        inv = scan(bucket["url"], options)
        client = s3_client(options)
        merged = merge_s3(read_s3_rules(client, bucket["name"]), expand(parse_rules(CLASSIC, AWS), classify(inv)))
        with pytest.raises(PermissionError, match=rf"bucket {bucket['name']}: no permission to put its lifecycle configuration \(AccessDenied\)"):
            apply_s3(client, bucket["name"], merged, confirm=True)
        with pytest.raises(PermissionError, match="no permission to list"):
            scan(bucket["url"], {**options, "key": "AKIAUNKNOWN", "secret": "x"})
    finally:
        _moto_auth(bucket["endpoint"], "inf")
    assert read_s3_rules(bucket["client"], bucket["name"]) == []


def test_a_class_the_price_table_lacks_is_one_line(bucket):
    put(bucket, "x.bin", 1000, StorageClass="INTELLIGENT_TIERING")
    classified = classify(scan(bucket["url"], bucket["storage_options"]))
    with pytest.raises(ValueError, match=r"'INTELLIGENT_TIERING' is not in the aws price table.*\+prices.aws.classes.INTELLIGENT_TIERING"):
        price_groups(classified, AWS)
    extended = StoragePrices.load(overrides={"aws": {"classes": {"INTELLIGENT_TIERING": {"usd_per_gb_month": 0.0125}}}})
    assert price_groups(classified, extended.provider("aws"))["other"]["usd_per_month"] == pytest.approx(1000 / 1e9 * 0.0125)
