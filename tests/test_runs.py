"""mlcost_pl.runs: run folder names that paste into the next command, and the run identity that refuses a resume
of another config (pure: no Trainer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from mlcost_pl.runs import IDENTITY_FILE, RunConfigChangedError, check_run_identity, config_identity, run_name_from_overrides
from tests.helpers.cfg import compose_cfg

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("overrides", [
    [],
    ["experiment=digits_fast"],
    ["model.backbone=mobilenet_v3_small", "trainer.max_epochs=3"],
    ["data=imagefolder", "data.root=/data/pets"],
    ["callbacks.preemption.watchers=[gcp]", "+trainer.gradient_clip_val=1.0"],
])
def test_run_folders_are_valid_override_values(overrides, tmp_path):
    cfg = compose_cfg("train", overrides, None)
    run_dir = f"{cfg.paths.log_dir}/{cfg.task_name}/{cfg.run_name}"
    for path in (run_dir, f"{run_dir}/checkpoints", f"{tmp_path}/outputs/train/{cfg.run_name}/checkpoints"):
        parsed = OverridesParser.create().parse_override(f"ckpt_path={path}")
        assert parsed.value() == path  # `recipes.export ckpt_path=<printed path>` works as pasted


def test_every_override_changes_the_run_folder_except_the_volatile_ones():
    names = {compose_cfg("train", o, None).run_name for o in ([], ["trainer.max_epochs=2"], ["trainer.max_epochs=3"])}
    assert len(names) == 3  # trainer.max_epochs=2 no longer resumes (and crashes) the default run
    assert compose_cfg("train", ["run_name=x", "extend_to_epochs=9"], None).run_name == "x"
    assert compose_cfg("train", ["extend_to_epochs=9", "trainer.enable_progress_bar=false"], None).run_name == "default"
    assert run_name_from_overrides("a-1+b-" + "x" * 200) == run_name_from_overrides("a-1+b-" + "x" * 200)
    assert len(run_name_from_overrides("a-1+b-" + "x" * 200)) == 80


def _committed(folder: Path, step: int = 4) -> None:
    ckpt = folder / f"step-{step:09d}-{1700000000000 + step:013d}"
    ckpt.mkdir(parents=True)
    (ckpt / "MANIFEST.json").write_text("{}")


CFG = {"trainer": {"max_epochs": 2, "enable_progress_bar": True}, "optimizer": {"lr": 0.002},
       "paths": {"output_dir": "/a"}, "run_name": "r", "hydra": {"x": 1}}


def _with(**changes):
    cfg = json.loads(json.dumps(CFG))
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return cfg


def test_identity_ignores_paths_names_and_progress_bars():
    assert config_identity(CFG) == {"trainer": {"max_epochs": 2}, "optimizer": {"lr": 0.002}}
    assert config_identity(_with(paths__output_dir="/moved", trainer__enable_progress_bar=False)) == config_identity(CFG)


def test_fresh_same_changed_and_extended_runs(tmp_path):
    folder = tmp_path / "ckpts"
    digest = check_run_identity(str(folder), CFG, run_name="r")  # fresh: recorded
    assert json.loads((folder / IDENTITY_FILE).read_text())["config_hash"] == digest
    # No checkpoint committed yet: a changed config simply starts over.
    check_run_identity(str(folder), _with(optimizer__lr=0.1), run_name="r")
    check_run_identity(str(folder), CFG, run_name="r")
    _committed(folder)
    assert check_run_identity(str(folder), CFG, run_name="r") == digest  # the same run resumes
    with pytest.raises(RunConfigChangedError) as info:
        check_run_identity(str(folder), _with(optimizer__lr=0.1, trainer__max_epochs=5), run_name="r")
    message = str(info.value)
    assert "\n" not in message and "optimizer.lr: 0.002 -> 0.1" in message and "trainer.max_epochs: 2 -> 5" in message
    assert "extend_to_epochs=N" in message and "run_name=<new name>" in message
    # Only trainer.max_epochs differs, and extend_to_epochs was asked for: the run is extended and re-recorded.
    check_run_identity(str(folder), _with(trainer__max_epochs=5), run_name="r", extend_to_epochs=5)
    assert json.loads((folder / IDENTITY_FILE).read_text())["config"]["trainer"]["max_epochs"] == 5
    with pytest.raises(RunConfigChangedError):  # the plain old command no longer matches the extended run
        check_run_identity(str(folder), CFG, run_name="r")
    with pytest.raises(ValueError, match="must exceed the run's trainer.max_epochs=5"):
        check_run_identity(str(folder), _with(trainer__max_epochs=3), run_name="r", extend_to_epochs=3)
    with pytest.raises(RunConfigChangedError):  # extend_to_epochs does not excuse other changes
        check_run_identity(str(folder), _with(trainer__max_epochs=9, optimizer__lr=1.0), run_name="r", extend_to_epochs=9)


def test_extending_a_run_without_checkpoints_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoint of run r to extend"):
        check_run_identity(str(tmp_path / "none"), CFG, run_name="r", extend_to_epochs=4)


def test_recipes_import_no_torch_before_the_config_is_checked():
    code = ("import sys, recipes.train, recipes.export, recipes.costs, recipes.finetune; "
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_a_config_typo_is_reported_before_torch_is_imported(tmp_path):
    """A typo costs Hydra's start-up (seconds), not Lightning's ~20 s import: the failing command never imports torch."""
    code = ("import runpy, sys\n"
            "sys.argv = ['recipes.train', 'trainer.max_epoch=3']\n"
            "try:\n    runpy.run_module('recipes.train', run_name='__main__')\n"
            "finally:\n    print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\n")
    env = {"MLCOST_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "max_epoch" in proc.stderr and "Traceback" not in proc.stderr
    assert "torch imported: False" in proc.stderr
    assert not (tmp_path / "outputs").exists()
