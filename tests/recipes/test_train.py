"""recipes.train: train(cfg) smoke tests and the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback
from omegaconf import open_dict

from recipes.train import train
from tests.helpers.cfg import compose_cfg, fast_overrides

REPO = Path(__file__).resolve().parents[2]


def test_train_fits_tests_and_reports(tmp_path, capsys):
    cfg = compose_cfg("train", fast_overrides("trainer.max_epochs=2"), tmp_path)
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 8
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["throughput/train_samples_per_s"] > 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "wall time" in out
    assert (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").exists()


def test_train_with_imagefolder(tmp_path, image_folder):
    cfg = compose_cfg("train", fast_overrides("data=imagefolder", f"data.root={image_folder}", "data.num_workers=0", "data.image_size=16"), tmp_path)
    metrics, objects = train(cfg)
    assert objects["datamodule"].num_classes == 3
    assert objects["model"].head.out_features == 3
    assert "test/acc" in metrics


@pytest.mark.parametrize("debug", ["fast_dev_run", "limit", "overfit"])
def test_debug_configs_run(tmp_path, debug):
    extra = ["trainer.max_epochs=2"] if debug == "overfit" else []
    cfg = compose_cfg("train", ["model=tiny_cnn", "data.image_size=16", f"debug={debug}", *extra, "trainer.enable_progress_bar=false"], tmp_path)
    _, objects = train(cfg)
    assert objects["trainer"].global_step > 0


def test_ddp_on_cpu_two_processes(tmp_path):
    """trainer=ddp runs two gloo processes on CPU; both see the same data shard split and finish."""
    cfg = compose_cfg("train", fast_overrides("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "test=false"), tmp_path)
    cfg.trainer.strategy = "ddp_spawn"  # in-process test: spawn; the CLI uses `ddp` (subprocess launcher)
    metrics, objects = train(cfg)
    assert objects["trainer"].world_size == 2


def _cli(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLCOST_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "recipes.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_runs_end_to_end(tmp_path):
    proc = _cli(fast_overrides(), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlcost_pl train" in proc.stdout and "test accuracy" in proc.stdout
    run_dirs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(run_dirs) == 1 and (run_dirs[0] / "csv" / "version_0" / "metrics.csv").exists()


def test_cli_bad_input_is_one_line(tmp_path):
    proc = _cli(["data=imagefolder", f"data.root={tmp_path}/nowhere"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: FileNotFoundError") and f"{tmp_path}/nowhere" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_unknown_backbone_lists_valid_names(tmp_path):
    cfg = compose_cfg("train", fast_overrides("model.backbone=resnet19"), tmp_path)
    with pytest.raises(Exception, match=r"resnet19.*Did you mean: resnet18") as info:
        train(cfg)
    assert "mobilenet_v3_small" in str(info.value)


# ---------------------------------------------------------------- runs never clobber each other (issue 18.4-18.6)
class _LrProbe(Callback):
    """Records the LR each training epoch starts with."""

    seen: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        type(self).seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def _train_cli(cfg):
    from recipes._cli import run_cli

    return run_cli(train, cfg)


def test_a_changed_config_is_refused_in_one_line_and_history_is_kept(tmp_path, capsys):
    train(compose_cfg("train", fast_overrides(), tmp_path))
    first_csv = (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text()
    # Same folder, another config (as `trainer.max_epochs=2` was, or an edited YAML): refused before anything is built.
    with pytest.raises(SystemExit) as exit_:
        _train_cli(compose_cfg("train", fast_overrides("optimizer.lr=0.1"), tmp_path))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ValueError: run ")
    assert "optimizer.lr: 0.002 -> 0.1" in err[0] and "extend_to_epochs=N" in err[0] and "run_name=" in err[0]
    assert (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text() == first_csv
    assert not (tmp_path / "run" / "csv" / "version_1").exists()


def test_extend_to_epochs_resumes_with_a_stretched_schedule_and_keeps_every_attempts_metrics(tmp_path, capsys):
    import sqlite3

    probe = "+callbacks.lr_probe._target_=tests.recipes.test_train._LrProbe"  # part of the run's config from the start
    train(compose_cfg("train", fast_overrides(probe), tmp_path))  # 1 epoch, cosine schedule ends at lr 0
    # Re-running the finished run trains nothing: the summary says so instead of a made-up samples/s.
    metrics, objects = train(compose_cfg("train", fast_overrides(probe), tmp_path))
    assert objects["trainer"].global_step == 4 and metrics["throughput/train_samples_per_s"] == 0.0
    out = capsys.readouterr().out
    assert "nothing left to train" in out, out

    _LrProbe.seen.clear()
    metrics, objects = train(compose_cfg("train", fast_overrides(probe, "extend_to_epochs=3"), tmp_path))
    trainer = objects["trainer"]
    assert trainer.current_epoch == 3 and trainer.global_step == 12
    assert _LrProbe.seen and _LrProbe.seen[0] > 0.0  # without the stretch the restored schedule trains at lr 0.0
    assert metrics["throughput/train_samples_per_s"] > 0
    out = capsys.readouterr().out
    assert "this command: 8 steps from step 4" in out
    # One CSV folder per attempt: the resume kept the first attempt's metrics.
    versions = sorted(p.name for p in (tmp_path / "run" / "csv").iterdir())
    assert versions == ["version_0", "version_1", "version_2"]
    assert "train/loss" in (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text()
    # The ledger keeps one row for the run, finished, with every step counted.
    with sqlite3.connect(tmp_path / "outputs" / "cost_ledger.sqlite") as con:
        rows = con.execute("SELECT status, steps, config_hash FROM runs").fetchall()
    assert rows == [("finished", 12, rows[0][2])] and rows[0][2]
    # Extending to fewer epochs than the run has is refused.
    with pytest.raises(ValueError, match="extend_to_epochs=2 must exceed the run's trainer.max_epochs=3"):
        train(compose_cfg("train", fast_overrides(probe, "extend_to_epochs=2"), tmp_path))


def test_fast_dev_run_writes_no_checkpoints_or_ledger_rows(tmp_path):
    cfg = compose_cfg("train", ["debug=fast_dev_run", "model=tiny_cnn", "data.image_size=16"], tmp_path)
    assert cfg.hydra.run.dir == "." and cfg.hydra.output_subdir is None  # Hydra makes no run folder, no .hydra/
    train(cfg)
    assert list(tmp_path.iterdir()) == []  # no checkpoints/, RUN.json, csv/ or cost_ledger.sqlite


@pytest.mark.slow
def test_fast_dev_run_cli_writes_nothing(tmp_path):
    env = {**os.environ, "MLCOST_ROOT": str(tmp_path / "root"), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    work = tmp_path / "cwd"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "recipes.train", "debug=fast_dev_run", "model=tiny_cnn", "data.image_size=16"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "root").exists() and list(work.iterdir()) == []


class _ThreadsProbe(Callback):
    def on_train_start(self, trainer, pl_module):
        self.threads = torch.get_num_threads()


def test_digits_fast_trains_on_one_thread_and_restores_the_setting(tmp_path):
    # experiment=digits_fast took 80 s (46 s in fit) on 2 contended cores with PyTorch's 2 intra-op threads, 42 s
    # (12 s in fit) with 1, at the same test accuracy 0.944.
    cfg = compose_cfg("train", ["experiment=digits_fast", *fast_overrides()[2:]], tmp_path)
    assert cfg.torch_threads == 1
    with open_dict(cfg):
        cfg.callbacks.probe = {"_target_": f"{__name__}._ThreadsProbe"}
    before = torch.get_num_threads()
    _, objects = train(cfg)
    probe = next(cb for cb in objects["trainer"].callbacks if isinstance(cb, _ThreadsProbe))
    assert probe.threads == 1
    assert torch.get_num_threads() == before
