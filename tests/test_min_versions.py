"""The version floors in pyproject.toml are true: the callback contract test passes on the lowest supported Lightning.

Builds a throw-away venv with exactly the floor of ``lightning`` (``uv pip install --no-deps``) and takes everything
else (torch, torchmetrics, pytest, ...) from the project's environment through a ``.pth`` file placed after the venv's
own packages: the CUDA torch wheel is gigabytes, so torch's floor is not installed (the project's torch is used).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def floor(package: str) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{re.escape(package)}>=([0-9][^",;<]*)', text)
    assert match, f"no {package}>= floor in pyproject.toml"
    return match.group(1)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build the venv")
def test_contract_passes_on_the_lowest_supported_lightning(tmp_path):
    lightning = floor("lightning")
    venv = tmp_path / "venv"
    subprocess.run(["uv", "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(["uv", "pip", "install", "-q", "--python", str(python), "--no-deps", f"lightning=={lightning}"],
                   check=True, timeout=600)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    project = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(ROOT)}
    (site / "zz_project_env.pth").write_text("\n".join(sorted(project)) + "\n")  # after the venv's own packages
    found = subprocess.run([str(python), "-c", "import lightning, torch; print(lightning.__version__, torch.__version__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout.split()
    from packaging.version import Version

    assert Version(found[0]) == Version(lightning), found
    out = subprocess.run([str(python), "-m", "pytest", "tests/callbacks/test_contract.py", "-q", "-x", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, f"lightning {lightning} / torch {found[1]}:\n{out.stdout[-4000:]}{out.stderr[-2000:]}"
