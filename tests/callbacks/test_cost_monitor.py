"""CostMonitor on a CPU Trainer: logged keys, resume keeps totals, budget stop leaves a checkpoint, alerts."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mlcost_pl.callbacks import CostMonitor
from mlcost_pl.summary import cost_summary_rows
from mlcost_pl.cost import open_ledger
from tests.helpers.runif import RunIf
from tests.helpers.servers import webhook_server  # noqa: F401 - fixture

DOCUMENTED = {"cost/usd_total", "cost/usd_per_step", "cost/usd_projected", "cost/usd_on_demand_equivalent",
              "cost/usd_spot_equivalent", "cost/samples_per_s"}


class TinyModule(L.LightningModule):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(width, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(64, 8, generator=g), torch.randint(0, 2, (64,), generator=g))
        return DataLoader(data, batch_size=8)


class TickClock:
    """Every read advances one second: costs are deterministic in the number of reads."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _trainer(tmp_path, callbacks, **kw):
    kw = {"accelerator": "cpu", "devices": 1, "max_steps": 8, "log_every_n_steps": 2, "enable_progress_bar": False, "enable_model_summary": False,
          "enable_checkpointing": False, "logger": CSVLogger(tmp_path, name="csv", version=""), **kw}
    return L.Trainer(default_root_dir=tmp_path, callbacks=callbacks, **kw)


def test_logs_the_documented_keys_to_the_logger(tmp_path):
    monitor = CostMonitor("g5.xlarge", market="spot", ledger=str(tmp_path / "ledger.sqlite"))
    trainer = _trainer(tmp_path, [monitor])
    trainer.fit(TinyModule())
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k for r in rows for k, v in r.items() if v}
    assert DOCUMENTED <= logged
    assert not any(k.startswith("gpu/") for k in logged)  # CPU: absent, not zeros
    last = [r for r in rows if r.get("cost/usd_total")][-1]
    # spot is what we pay; the on-demand equivalent of the same wall time is dearer
    assert 0 < float(last["cost/usd_spot_equivalent"]) == pytest.approx(float(last["cost/usd_total"]))
    assert float(last["cost/usd_on_demand_equivalent"]) > float(last["cost/usd_total"])
    assert float([r for r in rows if r.get("cost/samples_per_s")][-1]["cost/samples_per_s"]) > 0
    (row,) = open_ledger(tmp_path / "ledger.sqlite").rows()
    assert row["status"] == "finished" and row["steps"] == 8 and row["samples"] == 64 and row["instance"] == "g5.xlarge"
    assert row["usd_total"] == pytest.approx(monitor.meter.usd_total) and "train/loss" in row["metrics"]
    text = dict(cost_summary_rows(trainer))
    assert {"spent (USD)", "on-demand equivalent (USD)", "spot equivalent (USD)", "lost to preemption",
            "checkpoint overhead", "techniques"} <= set(text)
    assert "CostMonitor" in text["techniques"]


def test_arithmetic_on_a_trainer_with_a_fake_clock(tmp_path):
    clock = TickClock()
    monitor = CostMonitor("custom", usd_per_hour=3600.0, clock=clock, ledger=None)  # $1 per clock read
    trainer = _trainer(tmp_path, [monitor], logger=False)
    trainer.fit(TinyModule())
    assert monitor.meter.steps_total == 8
    # reads: fit start, 8 batches, epoch end, train end -> 10 one-second intervals; nothing accrues after the stop
    assert monitor.meter.usd_total == pytest.approx(10.0)
    assert monitor.meter.seconds_total == pytest.approx(10.0)
    assert monitor.figures(trainer)["cost/usd_projected"] == pytest.approx(10.0)  # no steps left


def test_resume_keeps_cumulative_totals(tmp_path):
    clock = TickClock()
    first = CostMonitor("custom", usd_per_hour=3600.0, clock=clock, ledger=str(tmp_path / "ledger.sqlite"))
    trainer = _trainer(tmp_path, [first], max_steps=4, logger=False)
    trainer.fit(TinyModule())
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    spent, run_id = first.meter.usd_total, first.run_id

    second = CostMonitor("custom", usd_per_hour=3600.0, clock=clock, ledger=str(tmp_path / "ledger.sqlite"))
    trainer = _trainer(tmp_path, [second], max_steps=8, logger=False)
    trainer.fit(TinyModule(), ckpt_path=str(tmp_path / "mid.ckpt"))
    assert second.run_id == run_id and second.meter.segments == 2
    assert second.meter.steps_total == 8 and second.meter.usd_total > spent
    (row,) = open_ledger(tmp_path / "ledger.sqlite").rows()  # one logical run, one row
    assert row["steps"] == 8 and row["usd_total"] == pytest.approx(second.meter.usd_total)


def test_budget_stop_checkpoints_then_stops(tmp_path):
    monitor = CostMonitor("custom", usd_per_hour=3600.0, max_usd=4.0, clock=TickClock(), ledger=str(tmp_path / "l.sqlite"))
    trainer = _trainer(tmp_path, [monitor], max_steps=50, min_epochs=5, logger=False)
    with pytest.warns(UserWarning, match="budget reached"):
        trainer.fit(TinyModule())
    assert trainer.global_step < 8 and monitor.status == "budget_stop"
    ckpt = torch.load(monitor.budget_checkpoint, weights_only=False)
    assert ckpt["global_step"] == trainer.global_step
    assert open_ledger(tmp_path / "l.sqlite").rows()[0]["status"] == "budget_stop"
    # the checkpoint resumes, and the budget, already spent, stops it again at once
    again = CostMonitor("custom", usd_per_hour=3600.0, max_usd=4.0, clock=TickClock())
    resumed = _trainer(tmp_path, [again], max_steps=50, logger=False)
    with pytest.warns(UserWarning, match="budget reached"):
        resumed.fit(TinyModule(), ckpt_path=monitor.budget_checkpoint)
    assert resumed.global_step == trainer.global_step + 1 and again.meter.usd_total > monitor.meter.usd_total


def test_budget_on_projection_stops_early(tmp_path):
    monitor = CostMonitor("custom", usd_per_hour=3600.0, max_usd=20.0, budget_on="projected", min_steps=2, clock=TickClock())
    trainer = _trainer(tmp_path, [monitor], max_steps=40, logger=False)
    with pytest.warns(UserWarning, match="projected"):
        trainer.fit(TinyModule())
    assert trainer.global_step == 2 and monitor.meter.usd_total < 20.0


def _spot(tmp_path, **kw):
    from mlcost_pl.callbacks import SpotCheckpoint

    return SpotCheckpoint(str(tmp_path / "ckpts"), **{"every_n_steps": None, "save_on_fit_end": False, **kw})


def test_budget_stop_leaves_a_spot_checkpoint_that_resumes(tmp_path):
    spot = _spot(tmp_path)
    monitor = CostMonitor("custom", usd_per_hour=3600.0, max_usd=4.0, clock=TickClock())
    trainer = _trainer(tmp_path, [spot, monitor], max_steps=50, logger=False)
    with pytest.warns(UserWarning, match="budget reached"):
        trainer.fit(TinyModule())
    stopped_at = trainer.global_step
    assert monitor.budget_checkpoint == spot.last_checkpoint and monitor.budget_checkpoint.startswith(spot.dirpath)
    assert not (tmp_path / "budget-stop.ckpt").exists()

    from mlcost_pl.checkpoint import resolve_checkpoint

    assert resolve_checkpoint(spot.dirpath) == monitor.budget_checkpoint  # the newest verified checkpoint
    # Re-running with a bigger budget resumes automatically from it; the dollars carry over.
    spot2 = _spot(tmp_path)
    monitor2 = CostMonitor("custom", usd_per_hour=3600.0, max_usd=1000.0, clock=TickClock())
    resumed = _trainer(tmp_path, [spot2, monitor2], max_steps=stopped_at + 3, logger=False)
    resumed.fit(TinyModule())
    assert spot2.resumed_from == monitor.budget_checkpoint and resumed.global_step == stopped_at + 3
    assert monitor2.run_id == monitor.run_id and monitor2.meter.steps_total == stopped_at + 3
    assert monitor2.meter.usd_total > monitor.meter.usd_total


def test_reads_spot_checkpoint_records_lost_steps_and_checkpoint_time(tmp_path):
    # First attempt: saves at step 4, runs to 6 (progress recorded every step), "dies" without a final save.
    spot = _spot(tmp_path, every_n_steps=4, progress_every_seconds=1e-6)
    monitor = CostMonitor("custom", usd_per_hour=3600.0, clock=TickClock())
    _trainer(tmp_path, [spot, monitor], max_steps=6, logger=False).fit(TinyModule())
    assert spot.blocked_seconds_total > 0
    # Second attempt resumes from step 4: steps 5-6 are re-done.
    spot2 = _spot(tmp_path, every_n_steps=4)
    monitor2 = CostMonitor("custom", usd_per_hour=3600.0, clock=TickClock())
    trainer = _trainer(tmp_path, [spot2, monitor2], max_steps=8, logger=False)
    trainer.fit(TinyModule())
    figures = monitor2.figures(trainer)
    assert figures["cost/lost_steps"] == 2 == spot2.lost_steps_total
    assert figures["cost/usd_lost_preemption"] == pytest.approx(2 * monitor2.meter.usd_per_step_overall)
    assert figures["cost/checkpoint_s"] == pytest.approx(spot2.blocked_seconds_total) and figures["cost/checkpoint_s"] > 0
    assert figures["cost/usd_checkpoint"] == pytest.approx(spot2.blocked_seconds_total)  # $1/s
    rows = dict(cost_summary_rows(trainer))
    assert "2 steps re-done" in rows["lost to preemption"] and "SpotCheckpoint" in rows["techniques"]


def test_alert_warns_and_posts_to_the_webhook(tmp_path, webhook_server):
    ledger = open_ledger(tmp_path / "ledger.sqlite")
    for i in range(2):  # two cheap similar runs in the history
        ledger.upsert({"run_id": f"past{i}", "started_at": f"2026-01-0{i + 1}", "status": "finished", "config_hash": "cfgA",
                       "usd_per_step": 0.01, "usd_total": 0.08, "steps": 8})
    monitor = CostMonitor("custom", usd_per_hour=3600.0, clock=TickClock(), ledger=str(tmp_path / "ledger.sqlite"),
                          config_hash="cfgA", alert_k=3.0, alert_min_runs=2, min_steps=2, webhook_url=webhook_server.url, run_name="pricey")
    trainer = _trainer(tmp_path, [monitor], logger=False)
    with pytest.warns(UserWarning, match="cost anomaly: usd_per_step"):
        trainer.fit(TinyModule())
    posted = [r["json"] for r in webhook_server.received]
    assert {p["metric"] for p in posted} == {"usd_per_step", "usd_projected"}  # each once
    per_step = next(p for p in posted if p["metric"] == "usd_per_step")
    assert per_step["name"] == "pricey" and per_step["config_hash"] == "cfgA" and per_step["ratio"] > 3.0
    assert "cost anomaly" in per_step["text"] and per_step["runs"] == 2
    json.dumps(posted)


def test_no_alert_without_history_or_within_k(tmp_path, webhook_server):
    monitor = CostMonitor("custom", usd_per_hour=1.0, ledger=str(tmp_path / "ledger.sqlite"), config_hash="x",
                          min_steps=1, webhook_url=webhook_server.url)
    _trainer(tmp_path, [monitor], logger=False).fit(TinyModule())
    _trainer(tmp_path, [CostMonitor("custom", usd_per_hour=1.0, ledger=str(tmp_path / "ledger.sqlite"), config_hash="x",
                                    alert_k=1000.0, min_steps=1, webhook_url=webhook_server.url)], logger=False).fit(TinyModule())
    assert webhook_server.received == []
    assert len(open_ledger(tmp_path / "ledger.sqlite").rows()) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"instance": "p4d.24xlarg"}, "Did you mean: p4d.24xlarge"),
        ({"instance": "custom", "usd_per_hour": "1.0"}, "usd_per_hour"),
        ({"instance": 5}, "instance"),
        ({"instance": "g5.xlarge", "min_steps": 2.5}, "min_steps"),
        ({"instance": "g5.xlarge", "alert_min_runs": True}, "alert_min_runs"),
        ({"instance": "g5.xlarge", "webhook_timeout": "5"}, "webhook_timeout"),
        ({"instance": "g5.xlarge", "ledger": ""}, "ledger"),
        ({"instance": "g5.xlarge", "prices": ["custom"]}, "prices"),
        ({"instance": "g5.xlarge", "market": "reserved"}, "market"),
        ({"instance": "g5.xlarge", "max_usd": 0}, "max_usd"),
        ({"instance": "g5.xlarge", "budget_on": "vibes"}, "budget_on"),
        ({"instance": "g5.xlarge", "alert_k": -1}, "alert_k"),
        ({"instance": "g5.xlarge", "webhook_url": "slack"}, "webhook_url"),
        ({"instance": "custom", "usd_per_hour": 1.0, "market": "spot"}, "spot_usd_per_hour"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CostMonitor(**kwargs)


def test_defaults_work_with_a_placeholder_price_that_says_so(tmp_path, caplog):
    monitor = CostMonitor()
    assert monitor.price_is_placeholder and monitor.meter.usd_per_hour == pytest.approx(0.10)
    with caplog.at_level("INFO"):
        _trainer(tmp_path, [monitor], max_steps=2, logger=False).fit(TinyModule())
    assert monitor.meter.usd_total > 0 and "a placeholder price: pass usd_per_hour=" in caplog.text
    assert not CostMonitor(usd_per_hour=1.0).price_is_placeholder


class Recording(CSVLogger):
    """A CSVLogger that also keeps every logged value in memory."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.logged: list[dict] = []

    def log_metrics(self, metrics, step=None):
        self.logged.append(dict(metrics))
        super().log_metrics(metrics, step)


class SlowModule(TinyModule):
    """Work the old meter did not bill: set-up before on_fit_start, and a slow teardown after training ends."""

    def setup(self, stage):
        import time

        time.sleep(0.4)

    def on_train_end(self):
        import time

        time.sleep(0.4)


def test_bills_the_whole_fit_and_the_final_total_reaches_the_loggers(tmp_path):
    import time

    monitor = CostMonitor("custom", usd_per_hour=3600.0, ledger=None)  # $1 per second
    logger = Recording(tmp_path, name="csv", version="")
    trainer = _trainer(tmp_path, [monitor], logger=logger)
    model = SlowModule()
    start = time.monotonic()
    trainer.fit(model)
    wall = time.monotonic() - start
    billed = monitor.meter.seconds_total
    # Everything between setup and teardown: > 95 % of the wall clock around fit (the old meter billed ~60 % here).
    assert 0.95 * wall <= billed <= wall, (billed, wall)
    logged = max(m["cost/usd_total"] for m in logger.logged if "cost/usd_total" in m)
    assert logged == pytest.approx(monitor.meter.usd_total)  # the final total, not the last step's
    with open(tmp_path / "csv" / "metrics.csv") as f:
        assert max(float(r["cost/usd_total"]) for r in csv.DictReader(f) if r.get("cost/usd_total")) == pytest.approx(logged)


def test_bill_from_an_earlier_start_counts_it(tmp_path):
    clock = TickClock()
    monitor = CostMonitor("custom", usd_per_hour=3600.0, clock=clock, ledger=None)
    monitor.bill_from(-99.0)  # e.g. the process start, 100 clock seconds before the first read
    _trainer(tmp_path, [monitor], logger=False).fit(TinyModule())
    assert monitor.meter.seconds_total == pytest.approx(10.0 + 100.0)
    with pytest.raises(ValueError, match="start"):
        monitor.bill_from("now")


def test_resume_on_another_instance_and_market_keeps_totals_and_run_id(tmp_path):
    first = CostMonitor("g5.xlarge", market="spot", clock=TickClock(), ledger=None)
    trainer = _trainer(tmp_path, [first], max_steps=4, logger=False)
    trainer.fit(TinyModule())
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    second = CostMonitor("custom", usd_per_hour=1.0, clock=TickClock(), ledger=None)
    trainer = _trainer(tmp_path, [second], max_steps=8, logger=False)
    trainer.fit(TinyModule(), ckpt_path=str(tmp_path / "mid.ckpt"))
    assert second.run_id == first.run_id and second.meter.steps_total == 8 and second.meter.segments == 2


def test_fit_twice_and_state_round_trip(tmp_path):
    monitor = CostMonitor("custom", usd_per_hour=3600.0, clock=TickClock())
    for _ in range(2):
        _trainer(tmp_path, [monitor], max_steps=2, logger=False).fit(TinyModule())
    state = monitor.state_dict()
    twin = CostMonitor("custom", usd_per_hour=3600.0)
    twin.load_state_dict(state)
    assert twin.state_dict()["meter"] == state["meter"] and twin.run_id == monitor.run_id
    assert state["meter"]["steps_total"] == 4 and state["meter"]["segments"] == 2


@pytest.mark.slow
def test_ddp_budget_stop_is_collective(tmp_path):
    """Two gloo processes: rank 0 decides, both stop at the same step (no hang), one checkpoint, one ledger row."""
    monitor = CostMonitor("custom", usd_per_hour=3600.0, max_usd=4.0, clock=TickClock(), ledger=str(tmp_path / "l.sqlite"))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=50, logger=False, callbacks=[monitor],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(TinyModule())
    assert (tmp_path / "budget-stop.ckpt").exists()
    (row,) = open_ledger(tmp_path / "l.sqlite").rows()
    assert row["status"] == "budget_stop" and row["num_instances"] == 1  # two CPU processes share one machine
    assert row["samples"] == 2 * 8 * row["steps"]  # samples count every rank


@pytest.mark.gpu
@RunIf(cuda=True)
def test_gpu_keys_and_instance_count_on_cuda(tmp_path):
    monitor = CostMonitor("g5.xlarge")
    trainer = _trainer(tmp_path, [monitor], logger=False, accelerator="gpu", devices=1)
    trainer.fit(TinyModule())
    assert monitor.num_instances == 1
    assert {"gpu/mem_allocated_gb", "gpu/mem_reserved_max_gb"} <= set(monitor.last_metrics)
    assert monitor.last_metrics["gpu/mem_reserved_max_gb"] > 0


class _Crashes(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        raise RuntimeError("a later command that fails before training a step")


def test_ledger_keeps_the_truth_across_attempts(tmp_path):
    """A resume counts the step the checkpoint holds; a later attempt that fails before training leaves the finished
    run finished, with its config hash and metrics; fast_dev_run writes no row."""
    from mlcost_pl.callbacks import SpotCheckpoint

    ledger = str(tmp_path / "ledger.sqlite")

    def callbacks():  # SpotCheckpoint first: it saves in on_train_batch_end before CostMonitor has ticked that step
        return [SpotCheckpoint(str(tmp_path / "ckpt"), every_n_steps=3), CostMonitor(usd_per_hour=1.0, ledger=ledger)]

    _trainer(tmp_path, callbacks(), max_steps=3, logger=False).fit(TinyModule())
    _trainer(tmp_path, callbacks(), max_steps=8, logger=False).fit(TinyModule())  # resumes at step 3
    (row,) = open_ledger(ledger).rows()
    assert row["status"] == "finished" and row["steps"] == 8 and row["config_hash"] and row["metrics"]
    with pytest.raises(RuntimeError, match="fails before training"):
        _trainer(tmp_path, [*callbacks(), _Crashes()], max_steps=16, logger=False).fit(TinyModule())
    (after,) = open_ledger(ledger).rows()
    assert after["status"] == "finished" and after["config_hash"] == row["config_hash"] and after["metrics"] == row["metrics"]
    _trainer(tmp_path / "dev", [CostMonitor(usd_per_hour=1.0, ledger=str(tmp_path / "dev.sqlite"))], fast_dev_run=True).fit(TinyModule())
    assert not (tmp_path / "dev.sqlite").exists()
