"""The export's printed "verify with" command runs as pasted: `uv run`, shell quoting, Hydra quoting."""

from __future__ import annotations

import logging
import shlex

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from mlcost_pl.export.quantize import _quiet_ort
from mlcost_pl.export.report import verify_command


@pytest.mark.parametrize("path", [
    "outputs/export/ckpt_path-outputs_train_default_checkpoints/model",
    "/tmp/run 1/model",
    "/tmp/ckpt_path=x,y/model",
    "/tmp/it's/model",
])
def test_verify_command_survives_the_shell_and_hydra(path):
    argv = shlex.split(verify_command(path))
    assert argv[:5] == ["uv", "run", "python", "-m", "recipes.export"] and len(argv) == 6
    assert OverridesParser.create().parse_override(argv[5]).value() == path


def test_ort_advice_users_cannot_act_on_is_silenced(caplog):
    with caplog.at_level(logging.INFO), _quiet_ort():
        logging.warning("Please consider to run pre-processing before quantization. Refer to example: ...")
        logging.warning("Expected bias '/head/bias' to be an initializer")
        logging.warning("something a user should see")
    assert [r.getMessage() for r in caplog.records] == ["something a user should see"]
