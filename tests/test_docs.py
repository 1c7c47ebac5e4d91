"""The README and docs/ run as written: the site builds with ``mkdocs build --strict``, every Python snippet runs (shrunk
to seconds), and every ``uv run python -m recipes.<name> ...`` command composes its config (overrides parse, keys
exist)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Pages whose Python snippets run here as written (shrunk). A page whose snippets need a service of its own (a bucket
# with data, a Redis server) is tested by its feature's tests; add a page here once its snippets run stand-alone.
PYTHON_PAGES = {"README.md", "recipes.md", "spot-checkpoint.md", "preemption.md", "precision.md", "finetune.md", "cost.md",
                "rightsizing.md", "export.md"}
# Pages whose Python snippets take more than a few seconds even shrunk (ONNX export + INT8 calibration, a memory
# search over batch sizes, loading bitsandbytes): run with -m slow.
SLOW_PAGES = {"export.md", "rightsizing.md", "precision.md"}
RECIPE_CONFIG = {"finetune": "train"}  # recipe -> its config when the names differ


def _blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(), flags=re.M | re.S)


def test_site_builds_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()


def _python_pages() -> list:
    out = []
    for page in PAGES:
        if page.name in PYTHON_PAGES and _blocks(page, "python"):
            marks = [pytest.mark.slow] if page.name in SLOW_PAGES else []
            out.append(pytest.param(page, id=page.name, marks=marks))
    return out


@pytest.fixture
def shrunk_trainer(monkeypatch):
    """Every ``L.Trainer`` the snippets build trains 2 batches for 1 epoch, quietly (the snippets say max_epochs=8)."""
    import lightning as L

    original = L.Trainer.__init__

    def init(self, *args, **kwargs):
        kwargs.update(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        kwargs.setdefault("logger", False)
        original(self, *args, **kwargs)

    monkeypatch.setattr(L.Trainer, "__init__", init)


@pytest.mark.parametrize("page", _python_pages())
def test_python_snippets_run(page, tmp_path, monkeypatch, shrunk_trainer):
    """A page's snippets run in order in one namespace, as a reader pastes them; cloud URLs become in-memory ones."""
    monkeypatch.chdir(tmp_path)  # relative outputs (exports/, outputs/) land in tmp
    monkeypatch.setenv("MLCOST_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__snippet__"}
    for i, code in enumerate(_blocks(page, "python")):
        code = re.sub(r"s3://(bucket|team)/", r"memory://\1-snippet/", code)
        try:
            exec(compile(code, f"{page.name}[python {i}]", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - re-raised with the snippet named
            raise AssertionError(f"{page.name}, python snippet {i} fails as written: {err!r}\n{code}") from err


def _commands() -> list:
    out = []
    for page in PAGES:
        for block in _blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                if " -- " in line:  # the supervisor's child command
                    line = line.split(" -- ", 1)[1].strip()
                match = re.match(r"^(?:uv run (?:--no-sync )?)?python -m recipes\.(\w+)(.*)$", line)
                if match and "..." not in line and "<" not in line:
                    out.append(pytest.param(match.group(1), match.group(2), id=f"{page.name}: {line[:70]}"))
    return out


@pytest.mark.parametrize(("recipe", "args"), _commands())
def test_documented_commands_compose(recipe, args, tmp_path):
    from tests.helpers.cfg import compose_cfg

    config = RECIPE_CONFIG.get(recipe, recipe)
    if not (REPO / "configs" / f"{config}.yaml").exists():
        pytest.skip(f"recipes.{recipe} has no configs/{config}.yaml to compose")
    overrides = [arg for arg in shlex.split(args) if "=" in arg]  # positional commands (`report`, `plan`) are not overrides
    cfg = compose_cfg(config, overrides, tmp_path)
    if "run_name" in cfg:
        assert cfg.run_name  # resolves: a valid run folder name
