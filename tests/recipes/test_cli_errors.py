"""recipes._cli: one line and exit 2 only for user-input and config errors; every other exception keeps its
traceback (a shape bug in training_step, an ONNX parity failure, a ValueError deep inside a library)."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mlcost_pl.errors import MissingDependencyError, MissingInputError, UserInputError
from recipes._cli import run_cli, user_error


class _Checked:
    def __init__(self, every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")


class _Buggy:
    def __init__(self) -> None:
        _helper()


def _helper() -> None:
    raise ValueError("an internal invariant broke")


def _fail(err: BaseException):
    def fn():
        raise err

    return fn


def _wrapped(inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as err:
            raise RuntimeError("fit failed") from err
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    ("err", "label"),
    [(UserInputError("data.batch_size must be >= 1, got 0"), "ValueError"),
     (MissingInputError("data.root: no such directory: /x"), "FileNotFoundError"),
     (MissingDependencyError("optimizer=adamw8bit needs bitsandbytes: pip install bitsandbytes"), "ImportError")],
)
def test_user_input_errors_are_one_line_and_exit_2(err, label, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(_fail(_wrapped(err)))
    assert exit_.value.code == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and err_text.startswith(f"error: {label}: ")


@pytest.mark.parametrize(
    "err",
    [ValueError("Expected input batch_size (4) to match target batch_size (8)."),  # torch's shape error in training_step
     PermissionError("[Errno 13] Permission denied: '/root/.cache'"), ImportError("cannot import name 'x'"),
     FileNotFoundError("[Errno 2] No such file or directory: 'tmp.bin'")],
)
def test_other_errors_keep_their_traceback(err):
    with pytest.raises(type(err)):
        run_cli(_fail(err))
    assert user_error(_wrapped(err)) is None


def test_parity_failure_is_not_bad_input():
    from mlcost_pl.export.onnx_export import ParityError

    assert user_error(ParityError("ONNX output differs from PyTorch: max abs diff 0.5")) is None


def test_constructor_argument_checks_under_hydra_are_config_errors():
    with pytest.raises(InstantiationException) as bad:
        instantiate(OmegaConf.create({"_target_": f"{__name__}._Checked", "every_n_steps": 0}))
    assert user_error(bad.value) is bad.value
    with pytest.raises(InstantiationException) as buggy:
        instantiate(OmegaConf.create({"_target_": f"{__name__}._Buggy"}))
    assert user_error(buggy.value) is None  # raised deeper than the constructor: a bug, traceback kept
    with pytest.raises(InstantiationException) as missing:
        instantiate(OmegaConf.create({"_target_": "mlcost_pl.callbacks.NoSuchCallback"}))
    assert user_error(missing.value) is missing.value


def test_omegaconf_errors_are_config_errors(capsys):
    cfg = OmegaConf.create({"a": "???"})
    with pytest.raises(SystemExit):
        run_cli(lambda: cfg.a)
    assert capsys.readouterr().err.startswith("error: MissingMandatoryValue: ")
