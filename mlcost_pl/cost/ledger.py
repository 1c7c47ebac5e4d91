"""The run ledger: one row per run (config hash, instance, duration, cost, final metrics), kept across runs.

Two backends, picked from the location:

* a local path (``outputs/cost_ledger.sqlite``, the default): **SQLite**, one row per ``run_id`` upserted in a
  transaction, safe for concurrent runs on one machine (SQLite's file locking).
* any fsspec URL or a ``*.jsonl`` path (``s3://bucket/ledger.jsonl``): **JSON lines**, read-modify-write: read the
  whole file, replace or append the run's row, write the whole file back in one ``put`` (an object store replaces
  an object atomically, so readers never see a torn ledger; locally the file is written aside then renamed). Two runs
  finishing at the same moment on different machines can race (the later write wins); ledgers are small, so the
  rewrite is cheap.

Pure Python: no Lightning, no torch.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlcost_pl.errors import MissingDependencyError, UserInputError
from mlcost_pl.utils.fs import get_fs, is_local, local_path, write_atomic

# Column -> SQLite type. Rows are plain dicts with these keys (``metrics`` is a dict of floats).
COLUMNS: dict[str, str] = {
    "run_id": "TEXT PRIMARY KEY",
    "started_at": "TEXT",
    "finished_at": "TEXT",
    "name": "TEXT",
    "status": "TEXT",
    "config_hash": "TEXT",
    "instance": "TEXT",
    "cloud": "TEXT",
    "market": "TEXT",
    "num_instances": "INTEGER",
    "usd_per_hour": "REAL",
    "duration_s": "REAL",
    "steps": "INTEGER",
    "samples": "INTEGER",
    "usd_total": "REAL",
    "usd_per_step": "REAL",
    "usd_projected": "REAL",
    "usd_on_demand_equivalent": "REAL",
    "usd_spot_equivalent": "REAL",
    "usd_lost_preemption": "REAL",
    "checkpoint_s": "REAL",
    "metrics": "TEXT",
}


def new_run_id() -> str:
    """A fresh, unique run id."""
    return uuid.uuid4().hex


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    if not row.get("run_id"):
        raise ValueError("ledger row needs a run_id")
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise ValueError(f"ledger row has unknown column(s) {unknown}; columns: {', '.join(COLUMNS)}")
    out = {k: row.get(k) for k in COLUMNS}
    out["metrics"] = {str(k): float(v) for k, v in (row.get("metrics") or {}).items()}
    return out


class Ledger:
    """Where runs are recorded. Use :func:`open_ledger`; rows are dicts keyed by :data:`COLUMNS`."""

    url: str

    def upsert(self, row: Mapping[str, Any]) -> None:
        """Insert the row, or replace the row with the same ``run_id`` (a resumed run stays one row)."""
        raise NotImplementedError

    def rows(self) -> list[dict[str, Any]]:
        """Every row, oldest first (by ``started_at``, then insertion)."""
        raise NotImplementedError

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The row of ``run_id``, or None."""
        return next((r for r in self.rows() if r.get("run_id") == run_id), None)

    def similar(self, config_hash: str, exclude_run_id: str | None = None) -> list[dict[str, Any]]:
        """Rows with the same ``config_hash``, except ``exclude_run_id``."""
        return [r for r in self.rows() if r.get("config_hash") == config_hash and r.get("run_id") != exclude_run_id]


class SQLiteLedger(Ledger):
    """A local SQLite ledger (table ``runs``)."""

    def __init__(self, path: str) -> None:
        self.url = path
        self.path = local_path(path)
        parent = Path(self.path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserInputError(f"ledger: cannot create the folder of {path}: {err}") from None
        try:
            with self._connect() as con:
                cols = ", ".join(f"{k} {t}" for k, t in COLUMNS.items())
                con.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
                have = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
                for k, t in COLUMNS.items():  # ledgers written by older versions gain the new columns
                    if k not in have:
                        con.execute(f"ALTER TABLE runs ADD COLUMN {k} {t.replace(' PRIMARY KEY', '')}")
        except sqlite3.DatabaseError as err:
            raise UserInputError(f"ledger: {path} is not a usable SQLite database: {err}") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30.0)

    def upsert(self, row: Mapping[str, Any]) -> None:
        data = _clean(row)
        data["metrics"] = json.dumps(data["metrics"], sort_keys=True)
        keys = list(COLUMNS)
        con = self._connect()
        try:
            with con:  # one transaction
                con.execute(
                    f"INSERT OR REPLACE INTO runs ({', '.join(keys)}) VALUES ({', '.join('?' for _ in keys)})",
                    [data[k] for k in keys],
                )
        finally:
            con.close()

    def rows(self) -> list[dict[str, Any]]:
        con = self._connect()
        try:
            con.row_factory = sqlite3.Row
            out = [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY started_at, rowid")]
        finally:
            con.close()
        for r in out:
            r["metrics"] = json.loads(r["metrics"] or "{}")
        return out


class JSONLinesLedger(Ledger):
    """A JSON-lines ledger at any fsspec URL, rewritten whole on each upsert (see the module docstring)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        try:
            self.fs, self.path = get_fs(url, **self.storage_options)
        except ImportError as err:
            raise MissingDependencyError(f"ledger: {err}") from err

    def rows(self) -> list[dict[str, Any]]:
        if not self.fs.exists(self.path):
            return []
        text = self.fs.cat_file(self.path).decode()
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                warnings.warn(f"ledger {self.url}: line {i} is not JSON; skipped", stacklevel=2)
        return sorted(out, key=lambda r: str(r.get("started_at") or ""))

    def upsert(self, row: Mapping[str, Any]) -> None:
        data = _clean(row)
        rows = [r for r in self.rows() if r.get("run_id") != data["run_id"]] + [data]
        payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
        write_atomic(self.url, payload, self.storage_options)


def merge_row(previous: Mapping[str, Any] | None, row: Mapping[str, Any], trained: bool) -> dict[str, Any]:
    """The row to write for one attempt (one command) of a run that may already have a row.

    A run keeps one row across resumes, so a later command must not erase what an earlier one recorded: fields the
    new row leaves empty (a config hash not computed yet, metrics not logged yet) keep their previous values, metrics
    are merged, and an attempt that trained no step (it failed at start, or re-ran a finished run) leaves a
    ``finished`` run's status, config hash and metrics as they were (its billed time still counts).

    Examples:
        >>> old = {"run_id": "a", "status": "finished", "config_hash": "c1", "metrics": {"test/acc": 0.9}}
        >>> new = {"run_id": "a", "status": "failed", "config_hash": None, "metrics": {}}
        >>> merge_row(old, new, trained=False)
        {'run_id': 'a', 'status': 'finished', 'config_hash': 'c1', 'metrics': {'test/acc': 0.9}}
    """
    out = dict(row)
    if previous is None:
        return out
    for key, value in previous.items():
        if key == "metrics":
            out["metrics"] = {**(previous.get("metrics") or {}), **(row.get("metrics") or {})}
        elif out.get(key) is None:
            out[key] = value
    if not trained and previous.get("status") == "finished":
        for key in ("status", "finished_at", "config_hash", "metrics"):
            out[key] = previous.get(key)
    return out


def open_ledger(url: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> Ledger:
    """The ledger at ``url``: SQLite for a local path, JSON lines for ``*.jsonl`` or any remote fsspec URL.

    ``storage_options`` go to fsspec (credentials, ``client_kwargs.endpoint_url``, ...) for a JSON-lines ledger.

    Raises:
        ValueError: a remote URL that asks for SQLite (SQLite needs a local file), or an unusable database file.
    """
    url = str(url)
    if not url:
        raise UserInputError("ledger must be a path or fsspec URL, got ''")
    if url.endswith(".jsonl") or not is_local(url):
        if not is_local(url) and url.endswith((".sqlite", ".db", ".sqlite3")):
            raise UserInputError(f"ledger: {url}: SQLite ledgers must be local files; use a .jsonl name for a remote ledger")
        return JSONLinesLedger(url, storage_options)
    return SQLiteLedger(url)


def format_rows(rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> list[list[str]]:
    """Rows as strings for a table (floats to 4 significant digits, None as '-')."""
    out = []
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            cells.append("-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v))
        out.append(cells)
    return out
