"""recipes.export: export_from_cfg on a real recipes.train checkpoint, one-line errors, gate failure exit, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipes.export import GATE_FAILED_EXIT, export_from_cfg, run
from recipes.train import train
from tests.helpers.cfg import compose_cfg, fast_overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_ckpt(tmp_path_factory, _trained_once_for_recipe):
    """A checkpoint written by recipes.train (so it carries StoreConfig's config), with well-trained weights."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = compose_cfg("train", fast_overrides("data.image_size=8", "test=false"), tmp)
    train(cfg)
    ckpts = sorted(tmp.rglob("*.ckpt"))
    assert ckpts, "recipes.train wrote no checkpoint"
    ckpt = torch.load(ckpts[-1], weights_only=False)
    assert ckpt["mlcost_training_config"]["data"]["image_size"] == 8
    ckpt["state_dict"] = {k: v for k, v in _trained_once_for_recipe.state_dict().items()}
    torch.save(ckpt, tmp / "trained.ckpt")
    return tmp / "trained.ckpt"


@pytest.fixture(scope="module")
def _trained_once_for_recipe():
    from tests.export.conftest import train_tiny

    return train_tiny()[0]


def _cfg(tmp_path, *overrides):
    return compose_cfg("export", ["export.latency_iters=2", "export.batch_sizes=[1,8]", "export.verify_samples=64",
                                  *overrides], tmp_path)


def test_export_then_verify_from_the_stored_config(train_ckpt, tmp_path, capsys):
    out = tmp_path / "exp"
    report = export_from_cfg(_cfg(tmp_path, f"ckpt_path={train_ckpt}", f"out_dir={out}", "export.format=bnb_nf4"))
    assert report["source"]["ckpt_path"] == str(train_ckpt) and report["source"]["model"]["backbone"] == "tiny_cnn"
    assert {"ort_int8", "bnb_nf4"} <= set(report["variants"]) and report["gate"]["passed"]
    assert "mlcost_pl export" in capsys.readouterr().out
    assert export_from_cfg(_cfg(tmp_path, f"verify={out}"))["ok"]
    # Same folder again without overwrite: one line, exit 2, the export untouched.
    with pytest.raises(SystemExit) as exit_:
        run(_cfg(tmp_path, f"ckpt_path={train_ckpt}", f"out_dir={out}"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists already; pass export.overwrite=true" in err


def test_bad_checkpoint_path_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(_cfg(tmp_path, f"ckpt_path={tmp_path}/missing.ckpt"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.ckpt: no such file" in err
    with pytest.raises(SystemExit):
        run(_cfg(tmp_path))
    assert "ckpt_path is required" in capsys.readouterr().err


def test_gate_failure_is_a_nonzero_exit_with_figures(tmp_path, capsys):
    from tests.export.conftest import ConvOnly, train_tiny

    model, _ = train_tiny(epochs=8, model=ConvOnly())
    config = {"model": {"_target_": "tests.export.conftest.ConvOnly"},
              "data": {"_target_": "tests.export.conftest.ShiftedDigits", "image_size": 8, "calibration_scale": 0.0}}
    torch.save({"state_dict": model.state_dict(), "mlcost_training_config": config}, tmp_path / "conv.ckpt")
    args = (f"ckpt_path={tmp_path / 'conv.ckpt'}", f"out_dir={tmp_path / 'g'}", "export.max_accuracy_drop=0.05")
    with pytest.raises(SystemExit) as exit_:  # its config names classes outside the allow-list: refused, one line
        run(_cfg(tmp_path, *args))
    assert exit_.value.code == 2 and "export.trust_checkpoint=true" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        run(_cfg(tmp_path, *args, "export.trust_checkpoint=true"))
    assert exit_.value.code == GATE_FAILED_EXIT
    err = capsys.readouterr().err
    assert "accuracy gate failed: val/acc fp32 0." in err and "drops per attempt" in err and "No export was written" in err
    assert not (tmp_path / "g").exists()


@pytest.mark.slow
def test_cli_subprocess(train_ckpt, tmp_path):
    env = {**os.environ, "MLCOST_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "recipes.export", f"ckpt_path={train_ckpt}", "export.latency_iters=2"]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = list((tmp_path / "outputs" / "export").glob("*/model/report.json"))
    assert outs
    # The printed command runs as pasted, through a shell (`uv run`, quoting and all).
    line = next(line for line in proc.stdout.splitlines() if "verify with" in line)
    command = line.split("│")[2].strip()
    assert command.startswith("uv run python -m recipes.export verify=")
    assert f"Re-check (from the folder the export was run in): `{command}`" in (outs[0].parent / "report.md").read_text()
    proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlcost_pl export verify" in proc.stdout
    assert len(list((tmp_path / "outputs" / "export").iterdir())) == 1  # verify= wrote no run folder of its own
    # The run folder's name is a valid override value: the next recipe takes the path unquoted.
    assert "=" not in str(outs[0].parent.parent.name)
    proc = subprocess.run([sys.executable, "-m", "recipes.export", "ckpt_path=/no/such.ckpt"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
