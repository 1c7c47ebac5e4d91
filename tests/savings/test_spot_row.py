"""The spot row runs the configured model under real SIGTERM/SIGKILL, also after the parent ran parallel torch ops."""

from __future__ import annotations

import pytest
import torch

from mlcost_pl.cost.catalog import resolve_instance
from mlcost_pl.savings.rows import spot
from mlcost_pl.savings.rows.common import RunContext
from tests.helpers.cfg import compose_cfg


@pytest.mark.slow
def test_spot_row_measures_the_configured_model_after_parallel_work_in_the_parent(tmp_path):
    torch.set_num_threads(2)
    (torch.randn(512, 512) @ torch.randn(512, 512)).sum().item()  # an OpenMP pool in the parent before fork()
    cfg = compose_cfg("savings", ["model=tiny_cnn", "data.image_size=16"], tmp_path)
    row = spot.measure(RunContext(cfg, resolve_instance("g5.xlarge"), tmp_path))
    goodput = row.figures["goodput"]
    assert row.status == "measured" and "tiny_cnn on DigitsDataModule" in row.note
    assert goodput["ours"] >= goodput["mc_epoch"] and goodput["ours"] > 0.9
    assert row.figures["runs"]["ours"]["preemptions"] >= 1  # the schedule really preempted it
    assert row.saving == pytest.approx(1 - (0.4 / 1.006) / goodput["ours"], rel=1e-3)
