"""recipes.storage: report, plan (JSON + PNG) and apply on a moto bucket, in-process and as a CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

from mlcost_pl.checkpoint import manifest
from mlcost_pl.checkpoint.storage import CheckpointStorage
from mlcost_pl.storage import read_s3_rules
from recipes._cli import positional_command
from recipes.storage import COMMANDS, storage
from tests.helpers.cfg import compose_cfg
from tests.storage.conftest import bucket  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]


def storage_cfg(tmp_path, bucket, *overrides):
    cfg = compose_cfg("storage", [f"url={bucket['url']}", f"out={tmp_path}/out", *overrides], tmp_path)
    with open_dict(cfg):
        cfg.storage_options = bucket["storage_options"]
    return cfg


@pytest.fixture
def project_bucket(bucket):
    """A bucket holding one run's SpotCheckpoints (written now: a live run), an export and a dataset."""
    store = CheckpointStorage(f"{bucket['url']}/train/run-a/checkpoints", bucket["storage_options"])
    for step in (1, 2):
        manifest.commit_checkpoint(store, {manifest.CKPT_FILE: b"w" * 200_000}, step)
    put = lambda key, size: bucket["client"].put_object(Bucket=bucket["name"], Key=key, Body=b"\0" * size)  # noqa: E731
    for f in ("model.onnx", "report.json", "manifest.json"):
        put(f"export/run-a/{f}", 150_000)
    put("data/digits/index.json", 1_000)
    put("data/digits/chunk-0-0.bin", 400_000)
    put("temporary/scratch.bin", 10)
    return bucket


def test_report_plan_and_apply(tmp_path, project_bucket, capsys):
    b = project_bucket
    result = storage(storage_cfg(tmp_path, b, "command=report"))
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report == json.loads(json.dumps(result["report"]))
    assert report["groups"]["export"]["bytes"] == 450_000 and report["groups"]["dataset"]["objects"] == 2
    assert report["groups"]["total"]["usd_per_month"] > 0
    assert "storage report" in capsys.readouterr().out

    result = storage(storage_cfg(tmp_path, b, "command=apply", "rules=mlcost", "age_days=200", "live_days=1"))
    assert not result["apply"]["applied"] and read_s3_rules(b["client"], b["name"]) == []  # dry run by default
    assert (tmp_path / "out/plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plan = json.loads((tmp_path / "out/plan.json").read_text())
    assert plan["usd_saved"] > 0 and len(plan["monthly"]) == 12
    assert {r["name"] for r in plan["rules"]} == {"archive", "expire_temporary", "abort_multipart", "expire_old_checkpoints"}
    assert "COSTS MORE THAN IT SAVES" not in capsys.readouterr().out
    result = storage(storage_cfg(tmp_path, b, "command=apply", "rules=mlcost", "age_days=200", "live_days=1", "apply.confirm=true"))
    ids = {r["ID"] for r in read_s3_rules(b["client"], b["name"])}
    assert result["apply"]["applied"] and {"mlcost-archive", "mlcost-expire_temporary", "mlcost-abort_multipart"} <= ids
    assert sum(i.startswith("mlcost-expire_old_checkpoints-") for i in ids) == 1  # the older of the two checkpoints


@pytest.mark.parametrize(("overrides", "match"), [
    (["+rules.wipe.prefix=train/", "+rules.wipe.expire_days=400"], r"rule wipe would expire .*newest committed checkpoint of the live run"),
    (["+rules.more.prefix=temporary/old/", "+rules.more.expire_days=30"], r"overlapping rules: mlcost-expire_temporary"),
    (["rules.archive.transitions=[{days:90,storage_class:GLACIER_DEEP}]"], r"storage class 'GLACIER_DEEP' is not in the aws price table"),
    (["+rules.cold.prefix=data/", "+rules.cold.transitions=[{days:0,storage_class:GLACIER_IR}]", "+rules.archive.enabled=false",
      "reads={dataset:1.0}"], r"rule\(s\) cold cost more than they save over 12 months"),
])
def test_bad_input_is_refused_and_nothing_applied(tmp_path, project_bucket, overrides, match):
    cfg = storage_cfg(tmp_path, project_bucket, "command=apply", "apply.confirm=true", *overrides)
    with pytest.raises(ValueError, match=match):
        storage(cfg)
    assert read_s3_rules(project_bucket["client"], project_bucket["name"]) == []


def test_gcs_and_azure_policies_are_printed_not_applied(tmp_path, capsys):
    (tmp_path / "data/temporary").mkdir(parents=True)
    (tmp_path / "data/temporary/x.bin").write_bytes(b"x" * 10)
    # a 10-byte object: per-object transition fees outweigh what archiving saves (flagged), applied anyway on request
    base = [f"url={tmp_path}/data", f"out={tmp_path}/out", "command=apply", "apply.allow_costlier=true"]
    result = storage(compose_cfg("storage", [*base, "provider=gcp"], tmp_path))
    assert result["apply"]["policy"]["lifecycle"]["rule"][0]["action"] == {"type": "SetStorageClass", "storageClass": "NEARLINE"}
    out = capsys.readouterr().out
    assert "gcloud storage buckets update" in out and "COSTS MORE THAN IT SAVES" in out
    result = storage(compose_cfg("storage", [*base, "provider=azure"], tmp_path))
    assert result["apply"]["policy"]["rules"][0]["definition"]["actions"]["baseBlob"]["tierToCool"] == {"daysAfterModificationGreaterThan": 90}
    with pytest.raises(ValueError, match="apply.confirm=true puts S3 lifecycle configurations only"):
        storage(compose_cfg("storage", [*base, "provider=gcp", "apply.confirm=true"], tmp_path))


def test_positional_command():
    assert positional_command(["m", "plan", "url=x"], COMMANDS) == ["m", "command=plan", "url=x"]
    assert positional_command(["m", "url=x"], COMMANDS) == ["m", "url=x"]


def test_cli_bad_bucket_is_one_line(tmp_path, s3_server):
    env = {**os.environ, "MLCOST_ROOT": str(tmp_path), "AWS_ENDPOINT_URL": s3_server["endpoint"], "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    run = lambda *args: subprocess.run([sys.executable, "-m", "recipes.storage", *args], cwd=REPO, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    proc = run("report", "url=s3://no-such-bucket-cli")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: FileNotFoundError: url=s3://no-such-bucket-cli: no such bucket or folder"
