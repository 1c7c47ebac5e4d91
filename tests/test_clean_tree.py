"""A test run that writes into the working tree fails, naming what it left (issue 18.1a)."""

from __future__ import annotations

import subprocess
import sys
import uuid

from tests.helpers.clean_tree import ROOT, tree_entries


def test_a_stray_file_fails_the_run_and_is_named(tmp_path):
    if tree_entries() is None:
        import pytest

        pytest.skip("not a git checkout")
    stray = ROOT / f"stray-{uuid.uuid4().hex[:8]}.txt"
    test_file = tmp_path / "test_writes_into_the_tree.py"
    test_file.write_text(f"def test_writes():\n    open({str(stray)!r}, 'w').write('x')\n")
    conftest = tmp_path / "conftest.py"
    conftest.write_text("from tests.helpers.clean_tree import pytest_sessionfinish, pytest_sessionstart  # noqa\n")
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                               str(test_file)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        stray.unlink(missing_ok=True)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "1 passed" in proc.stdout and "left files in the working tree" in proc.stdout and stray.name in proc.stdout
