"""recipes.train's cost table and ledger row; recipes.costs' history and comparison, in-process and as a CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlcost_pl.cost import open_ledger
from recipes.costs import costs
from recipes.train import train
from tests.helpers.cfg import compose_cfg, fast_overrides

REPO = Path(__file__).resolve().parents[2]


def test_train_prints_a_cost_table_and_costs_compares_runs(tmp_path, capsys):
    for i in range(2):  # two separate runs (separate checkpoint folders, so the second does not resume the first)
        overrides = fast_overrides("callbacks.cost_monitor.prices.custom.on_demand=2.5", f"paths.checkpoint_dir={tmp_path}/ckpt{i}")
        cfg = compose_cfg("train", overrides, tmp_path)
        metrics, _ = train(cfg)
        assert metrics["cost/usd_total"] > 0
    out = capsys.readouterr().out
    assert out.count("mlcost_pl cost") == 2
    for row in ("spent (USD)", "on-demand equivalent", "spot equivalent", "lost to preemption", "checkpoint overhead", "techniques"):
        assert row in out
    ledger = tmp_path / "outputs" / "cost_ledger.sqlite"
    rows = open_ledger(ledger).rows()
    assert len(rows) == 2 and rows[0]["config_hash"] == rows[1]["config_hash"]
    assert all(r["status"] == "finished" and "test/acc" in r["metrics"] and r["usd_per_hour"] == 2.5 for r in rows)

    report = costs(compose_cfg("costs", [], tmp_path))
    out = capsys.readouterr().out
    assert "cost ledger" in out and "vs the average of 1 similar" in out
    by_figure = {c["figure"]: c for c in report["comparison"]}
    assert by_figure["usd_total"]["runs"] == 1 and by_figure["usd_total"]["ratio"] > 0

    env = {**os.environ, "MLCOST_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "recipes.costs", "last=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(2 runs)" in proc.stdout and "similar average" in proc.stdout


def test_costs_cli_without_a_ledger_is_one_line(tmp_path):
    env = {**os.environ, "MLCOST_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "recipes.costs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: FileNotFoundError: ledger=")
    assert "Traceback" not in proc.stderr
