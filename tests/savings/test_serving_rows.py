"""The serving rows of recipes.savings on a real export: batching (real recipes.serve processes on 127.0.0.1, one per
arm), the capacity it shares with autoscale and the serving bill, and quantization's 1-thread interleaved re-timing."""

from __future__ import annotations

import pytest
import torch

from mlcost_pl.cost.catalog import resolve_instance
from mlcost_pl.savings.rows import autoscale, batching, quantization
from mlcost_pl.savings.rows.common import RunContext
from recipes.savings import _bills
from tests.helpers.cfg import compose_cfg

SLO_MS = 200  # generous: the 2 cores are shared with other jobs; the row's logic, not this machine, is under test


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real export (fp32 + gated INT8 ONNX) of a TinyCNN on 8x8 digits trained for a moment, without a Trainer."""
    from mlcost_pl.export import export
    from tests.export.conftest import train_tiny

    model, dm = train_tiny(epochs=2)
    out = tmp_path_factory.mktemp("savings-serve") / "export"
    report = export(model, dm, out, price_per_hour=1.0, calibration_samples=64, parity_samples=64, batch_sizes=(1,),
                    latency_iters=1, verify_samples=32)
    return model.eval(), dm, out, report


def _ctx(exported, tmp_path, *overrides):
    model, dm, out, report = exported
    cfg = compose_cfg("savings", ["model=tiny_cnn", "data.image_size=8", f"savings.slo_ms={SLO_MS}", *overrides],
                      tmp_path)
    ctx = RunContext(cfg, resolve_instance("g5.xlarge"), tmp_path)
    ctx.cache.update(fitted=(model, dm, 1), exported=(out, report))
    return ctx


def test_batching_measures_three_arms_and_shares_the_capacity(exported, tmp_path):
    ctx = _ctx(exported, tmp_path, "savings.serve_ramp_s=3", "savings.cache_hit_rate=0.5")
    row = batching.measure(ctx)
    arms = row.figures["arms"]
    assert row.status == "measured" and set(arms) == {"unbatched", "batched", "batched_cache"}
    assert all("serve.variant=fp32" in a["overrides"] for a in arms.values())  # INT8 is the quantization row's
    assert all(a["rps"] >= 5 and a["p99_ms"] <= SLO_MS and a["exit_code"] == 0 for a in arms.values())  # SIGTERM drain
    assert row.saving == pytest.approx(1 - arms["unbatched"]["rps"] / arms["batched"]["rps"])
    assert arms["batched"]["hit_rate"] is None and 0.3 <= arms["batched_cache"]["hit_rate"] <= 0.7  # asked for 0.5
    best = arms["unbatched"]["rps"]  # the bill before batching: the unbatched fp32 arm
    # autoscale and the serving bill use the measured capacity, and say so; nothing is measured twice
    scaled = autoscale.measure(ctx)
    assert scaled.figures["capacity"]["rps"] == best and scaled.figures["capacity"]["source"].startswith("measured")
    assert "measured: " in scaled.note
    bills, capacity = _bills(ctx, [row, scaled], ctx.price)
    assert capacity["rps"] == best
    assert bills["serve"] == pytest.approx(ctx.price.on_demand * ctx.cfg.savings.predictions_per_month / (best * 3600))


def test_given_replica_rps_is_used_and_said_to_be_given(exported, tmp_path):
    ctx = _ctx(exported, tmp_path, "savings.replica_rps=80")
    row = autoscale.measure(ctx)
    assert row.figures["capacity"] == {"rps": 80.0, "slo_ms": None, "source": "given by savings.replica_rps, not measured"}
    assert "serve_arms" not in ctx.cache  # no server was started


def test_quantization_retimes_all_variants_at_one_thread(exported, tmp_path):
    threads = torch.get_num_threads()
    row = quantization.measure(_ctx(exported, tmp_path))
    assert torch.get_num_threads() == threads  # restored
    f = row.figures
    assert f["threads"] == 1 and set(f["usd_per_million"]) == {"torch_fp32", "ort_fp32", "ort_int8"}
    assert row.saving == pytest.approx(1 - f["ms_per_batch"]["ort_int8"] / f["ms_per_batch"]["ort_fp32"])
    assert "torch eager fp32" in row.note and "1 thread" in row.note
