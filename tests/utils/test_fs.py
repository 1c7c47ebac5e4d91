"""The one implementation of paths, fsspec URLs and atomic writes (mlcost_pl.utils.fs), and that nothing else
re-implements them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import fsspec
import pytest

from mlcost_pl.utils.cpu import cpu_info, parse_cpuinfo
from mlcost_pl.utils.fs import atomic_write_local, get_fs, is_local, local_path, write_atomic

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("target", "local"),
    [("runs/ledger.sqlite", True), ("/abs/x", True), ("file:///tmp/x", True), ("local:///tmp/x", True),
     ("s3://bucket/x", False), ("gs://b/x", False), ("memory://x", False), ("simplecache::s3://b/x", False)],
)
def test_is_local_from_the_url_alone(target, local):
    assert is_local(target) is local


def test_is_local_of_a_filesystem():
    assert is_local(fsspec.filesystem("file")) and not is_local(fsspec.filesystem("memory"))


def test_local_path_and_its_error():
    assert local_path("file:///tmp/a.txt") == "/tmp/a.txt"
    assert local_path("rel/a.txt") == os.path.abspath("rel/a.txt")
    with pytest.raises(ValueError, match="s3://b/x is not a local path"):
        local_path("s3://b/x")


def test_atomic_write_local_replaces_whole_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "f.json"
    assert atomic_write_local(target, "old") == 3
    with pytest.raises(TypeError):
        atomic_write_local(target, 12345)  # type: ignore[arg-type]  # the write fails half-way
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_write_atomic_local_file_url_and_memory(tmp_path):
    assert write_atomic(f"file://{tmp_path}/a/b.bin", b"abc") == 3
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"abc"
    write_atomic("memory://fsio-test/deep/x.txt", "hi")
    assert fsspec.filesystem("memory").cat_file("/fsio-test/deep/x.txt") == b"hi"


def test_get_fs_names_the_missing_package(monkeypatch):
    import fsspec.core

    def missing(*args, **kwargs):
        raise ImportError("no module named gcsfs")

    monkeypatch.setattr("mlcost_pl.utils.fs.url_to_fs", missing)
    with pytest.raises(ImportError, match="pip install gcsfs"):
        get_fs("gs://bucket/x")


def test_cpuinfo_is_parsed_once_per_process():
    info = parse_cpuinfo("processor : 0\nmodel name : Test CPU\nflags : fpu AVX2\n\nprocessor : 1\nflags : fpu avx2\n")
    assert info.flags == frozenset({"fpu", "avx2"}) and info.name == "Test CPU"
    assert cpu_info() is cpu_info()


def _sources() -> list[Path]:
    return [p for folder in ("mlcost_pl", "recipes") for p in (ROOT / folder).rglob("*.py")]


@pytest.mark.parametrize(
    ("pattern", "what"),
    [(r"os\.replace\(|os\.fsync\(|mkstemp\(", "a local atomic write"),
     (r"url_to_fs\(|fsspec\.open\(|fsspec\.filesystem\(", "fsspec URL handling"),
     (r'"://" (not )?in |startswith\("file://"\)|LocalFileSystem\)', "an 'is it local?' test"),
     (r"/proc/cpuinfo\"\)", "a /proc/cpuinfo reader")],
)
def test_one_implementation_of_each_helper(pattern, what):
    owners = {ROOT / "mlcost_pl" / "utils" / "fs.py", ROOT / "mlcost_pl" / "utils" / "cpu.py"}
    offenders = [str(p.relative_to(ROOT)) for p in _sources() if p not in owners and re.search(pattern, p.read_text())]
    assert not offenders, f"{what} outside mlcost_pl/utils: {offenders}"


def test_export_does_not_import_callbacks():
    imports = re.compile(r"^\s*(from|import) mlcost_pl\.callbacks", re.M)
    offenders = [p.name for p in (ROOT / "mlcost_pl" / "export").glob("*.py") if imports.search(p.read_text())]
    assert not offenders
