"""The test run must leave the working tree as it found it: every file a test writes goes under a tmp dir.

``tests/conftest.py`` imports the two hooks below: the set of untracked and ignored paths git reports is taken when
the session starts and compared when it ends; anything new fails the run, naming the paths.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Paths tools create on their own (bytecode, caches, the venv); not a test's output.
IGNORED_PARTS = ("__pycache__", ".pytest_cache", ".venv", ".ruff_cache", ".mypy_cache", ".hypothesis")

_BEFORE = pytest.StashKey[set]()


def tree_entries(root: Path = ROOT) -> set[str] | None:
    """Untracked and ignored paths under ``root`` (git's collapsed view), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=normal", "."],
                             cwd=root, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = {line[3:].strip().strip('"') for line in out.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(part in IGNORED_PARTS for part in Path(p).parts)}


def pytest_sessionstart(session: pytest.Session) -> None:
    before = tree_entries()
    if before is not None:
        session.stash[_BEFORE] = before


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.stash.get(_BEFORE, None)
    after = tree_entries() if before is not None else None
    new = sorted(after - before) if after is not None else []
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"the test run left files in the working tree (write under tmp_path instead): {', '.join(new)}"
        if reporter is not None:
            reporter.write_line(f"FAILED clean working tree: {message}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
