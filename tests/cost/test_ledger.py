"""The run ledger: SQLite locally, JSON lines on a local path and on a real (moto) S3 server."""

from __future__ import annotations

import sqlite3

import pytest

from mlcost_pl.cost import new_run_id, open_ledger
from mlcost_pl.cost.ledger import JSONLinesLedger, SQLiteLedger


def _row(run_id=None, config_hash="abc", usd=1.0, started="2026-01-01T00:00:00+00:00", status="finished"):
    return {"run_id": run_id or new_run_id(), "started_at": started, "config_hash": config_hash, "status": status,
            "instance": "g5.xlarge", "usd_total": usd, "usd_per_step": usd / 100, "steps": 100, "metrics": {"val/acc": 0.9}}


def _exercise(ledger):
    first = _row(started="2026-01-01T00:00:00+00:00")
    ledger.upsert(first)
    ledger.upsert(_row(config_hash="other", started="2026-01-02T00:00:00+00:00"))
    ledger.upsert({**first, "usd_total": 2.5, "status": "finished"})  # a resumed run updates its own row
    rows = ledger.rows()
    assert len(rows) == 2 and rows[0]["run_id"] == first["run_id"]
    assert rows[0]["usd_total"] == 2.5 and rows[0]["metrics"] == {"val/acc": 0.9}
    assert [r["config_hash"] for r in ledger.similar("abc")] == ["abc"]
    assert ledger.similar("abc", exclude_run_id=first["run_id"]) == []


def test_sqlite_ledger_is_the_local_default(tmp_path):
    ledger = open_ledger(tmp_path / "deep" / "ledger.sqlite")
    assert isinstance(ledger, SQLiteLedger)
    _exercise(ledger)
    with sqlite3.connect(tmp_path / "deep" / "ledger.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2


def test_sqlite_ledger_gains_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, usd_total REAL, metrics TEXT)")
        con.execute("INSERT INTO runs VALUES ('old', 1.0, '{}')")
    ledger = open_ledger(path)
    ledger.upsert(_row())
    assert {r["run_id"] for r in ledger.rows()} >= {"old"} and len(ledger.rows()) == 2


def test_jsonl_ledger_local(tmp_path):
    ledger = open_ledger(tmp_path / "ledger.jsonl")
    assert isinstance(ledger, JSONLinesLedger)
    _exercise(ledger)
    assert len((tmp_path / "ledger.jsonl").read_text().splitlines()) == 2
    assert not list(tmp_path.glob("*.tmp-*"))


def test_jsonl_ledger_skips_a_corrupt_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = open_ledger(path)
    ledger.upsert(_row())
    path.write_text(path.read_text() + "{torn\n")
    with pytest.warns(UserWarning, match="line 2"):
        assert len(ledger.rows()) == 1


def test_bad_ledger_locations_are_named(tmp_path):
    with pytest.raises(ValueError, match="SQLite ledgers must be local"):
        open_ledger("s3://bucket/ledger.sqlite")
    not_db = tmp_path / "ledger.sqlite"
    not_db.write_text("this is not sqlite" * 100)
    with pytest.raises(ValueError, match="ledger.sqlite"):
        open_ledger(not_db)
    with pytest.raises(ValueError, match="unknown column"):
        open_ledger(tmp_path / "l.sqlite").upsert({**_row(), "colour": "red"})


def test_jsonl_ledger_on_s3(s3_server):
    url = f"{s3_server['bucket']}/ledgers/team/cost_ledger.jsonl"
    ledger = open_ledger(url, s3_server["storage_options"])
    assert isinstance(ledger, JSONLinesLedger)
    _exercise(ledger)
    import fsspec

    text = fsspec.filesystem("s3", **s3_server["storage_options"]).cat_file(url).decode()
    assert len(text.splitlines()) == 2
