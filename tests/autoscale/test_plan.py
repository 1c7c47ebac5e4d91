"""recipes.autoscale plan: search, table, plan.json, plot, manifests; bad input as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlcost_pl.autoscale.capacity import Capacity, load_capacity, write_json
from mlcost_pl.autoscale.plan import deploy_hpa, search, usd_per_replica_hour
from mlcost_pl.autoscale.simulate import simulate
from mlcost_pl.autoscale.trace import Trace, diurnal_trace, write_trace
from mlcost_pl.errors import UserInputError
from recipes._cli import positional_command
from recipes.autoscale import COMMANDS, cpu_cores, run
from tests.helpers.cfg import compose_cfg

REPO = Path(__file__).resolve().parents[2]


def short_diurnal() -> Trace:
    """Four hours of the diurnal shape (a trough and a peak), 60 s rows: fast to search."""
    day = diurnal_trace(seed=1, peak_rps=400)
    keep = slice(6 * 60, 10 * 60)
    return Trace(day.seconds[keep] - day.seconds[keep][0], day.rps[keep], "short diurnal")


def test_search_finds_a_cheaper_setting_under_the_miss_limit():
    trace, cap = short_diurnal(), Capacity(rps=40, startup_s=30)
    plan = search(trace, cap, usd_per_hour=0.5, max_slo_miss=0.001, targets=(0.6, 0.8, 0.9), windows=(60, 300))
    rec = plan.recommended
    assert rec is not None and rec.miss_share <= 0.001
    assert rec.usd < plan.static.usd and rec.usd <= plan.classic.usd
    assert all(c["usd"] >= rec.usd - 1e-4 for c in plan.candidates if c["miss_share"] <= 0.001)
    v = plan.values
    assert v["cpu_target_utilization"] == rec.settings["target"] and v["min_replicas"] == rec.settings["min_replicas"]
    # the recommendation replays the same as the HPA the manifests describe
    again = simulate(trace, cap, deploy_hpa(cap, v["cpu_target_utilization"], v["min_replicas"], v["max_replicas"],
                                            v["scale_down_stabilization_s"]), 0.5)
    assert again.usd == pytest.approx(rec.usd) and again.missed == pytest.approx(rec.missed)


def test_a_tight_limit_raises_min_replicas_up_to_static():
    spike = np.concatenate([np.full(1800, 20.0), np.full(600, 200.0), np.full(1800, 20.0)])
    trace, cap = Trace(np.arange(len(spike)), spike, "spike"), Capacity(rps=40, startup_s=60)
    plan = search(trace, cap, usd_per_hour=1.0, max_slo_miss=0.0, targets=(0.8,), windows=(60,))
    assert plan.recommended.missed == 0
    assert plan.recommended.settings["min_replicas"] == plan.static.peak_replicas  # only static avoids every miss


def test_price_comes_from_the_catalog():
    assert usd_per_replica_hour("m5.xlarge") == pytest.approx(0.192)
    assert usd_per_replica_hour("m5.xlarge", "spot", replicas_per_instance=2) == pytest.approx(0.035)
    with pytest.raises(ValueError, match="not in the price catalog"):
        usd_per_replica_hour("m5.huge")


def test_plan_recipe_writes_plan_json_plot_trace_and_manifests(tmp_path, capsys):
    trace = write_trace(short_diurnal(), tmp_path / "t.csv")
    out = tmp_path / "plan"
    cfg = compose_cfg("autoscale", ["command=plan", "capacity.rps=40", f"trace={trace}", f"plan.out={out}",
                                    "plan.targets=[0.7,0.9]", "plan.windows=[60,300]", "plan.deploy.name=digits"], tmp_path)
    report = run(cfg)
    printed = capsys.readouterr().out
    for row in ("static peak", "classic HPA", "recommended HPA", "KEDA", "replica-hours", "SLO misses"):
        assert row in printed
    saved = json.loads((out / "plan.json").read_text())
    assert saved["recommended"] == report["recommended"] and set(saved["policies"]) == {"static_peak", "classic_hpa", "recommended_hpa", "keda"}
    for p in saved["policies"].values():
        assert {"replica_hours", "usd", "miss_share", "settings"} <= set(p)
    assert (out / "plan.png").read_bytes()[:4] == b"\x89PNG"
    hpa = yaml.safe_load((out / "k8s" / "hpa.yaml").read_text())
    rec = saved["recommended"]
    assert hpa["metadata"]["name"] == "digits"
    assert hpa["spec"]["minReplicas"] == rec["min_replicas"] and hpa["spec"]["maxReplicas"] == rec["max_replicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == rec["cpu_target_utilization"]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == rec["scale_down_stabilization_s"]
    assert (out / "k8s" / "deployment.yaml").is_file() and (out / "k8s" / "keda-scaledobject.yaml").is_file()
    assert (out / "trace.csv").read_text().startswith("seconds,requests_per_s")


def test_capacity_file_from_another_model_is_refused(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps({"model.onnx": {"sha256": name * 8}}))
    from mlcost_pl.autoscale.capacity import model_version

    write_json(Capacity(rps=50, slo_ms=50, model_version=model_version(tmp_path / "a"), model_dir=str(tmp_path / "a")).to_dict(),
               tmp_path / "capacity.json")
    assert load_capacity(tmp_path / "capacity.json", model_dir=tmp_path / "a").rps == 50
    with pytest.raises(ValueError, match="measured on another model version") as err:
        load_capacity(tmp_path / "capacity.json", model_dir=tmp_path / "b")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown key"):
        load_capacity('{"rps": 5, "qps": 3}')
    with pytest.raises(ValueError, match="not JSON"):
        load_capacity("{rps: 5")


def test_cpu_quantities():
    assert cpu_cores("1") == 1 and cpu_cores("500m") == 0.5 and cpu_cores(2) == 2
    with pytest.raises(ValueError, match="plan.deploy.cpu"):
        cpu_cores("lots")


def test_command_word_becomes_an_override():
    assert positional_command(["m", "plan", "trace=spiky"], COMMANDS) == ["m", "command=plan", "trace=spiky"]
    assert positional_command(["m", "trace=spiky"], COMMANDS) == ["m", "trace=spiky"]


def test_missing_capacity_names_both_ways_to_give_it(tmp_path):
    cfg = compose_cfg("autoscale", ["command=plan", "trace=diurnal", f"plan.out={tmp_path}"], tmp_path)
    with pytest.raises(ValueError, match=r"capacity is required: capacity=<capacity.json .*> or capacity.rps=<"):
        run(cfg)
    with pytest.raises(ValueError, match="command must be one of plan, measure"):
        run(compose_cfg("autoscale", ["command=deploy"], tmp_path))
    with pytest.raises(UserInputError, match="plan.deploy.name must be a DNS-1123 label"):
        run(compose_cfg("autoscale", ["command=plan", "capacity.rps=10", "plan.deploy.name=Bad_Name"], tmp_path))


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "gappy.csv"
    bad.write_text("seconds,requests_per_s\n0,5\n60,6\n180,7\n")
    env = {**os.environ, "MLCOST_ROOT": str(tmp_path)}
    cases = [
        (["plan", "capacity.rps=10", f"trace={bad}"], "gap: seconds jumps from 60 to 180"),
        (["plan", "capacity.rps=10", "trace=diurnal", "plan.instance=m5.huge"], "not in the price catalog"),
    ]
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-m", "recipes.autoscale", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("error: "), proc.stderr
