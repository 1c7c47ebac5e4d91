"""Grouping by what mlcost_pl wrote: real SpotCheckpoint folders (mlcost_pl.checkpoint), exports, datasets."""

from __future__ import annotations

import importlib
import json

import pytest

from mlcost_pl.checkpoint import manifest
from mlcost_pl.checkpoint.storage import CheckpointStorage
from mlcost_pl.storage import classify, scan

classify_mod = importlib.import_module("mlcost_pl.storage.classify")


def test_layout_names_match_the_checkpoint_module():
    assert (classify_mod.MANIFEST, classify_mod.PROGRESS) == (manifest.MANIFEST, manifest.PROGRESS)
    name = manifest.new_checkpoint_name(12)
    assert classify_mod.parse_name(name) == manifest.parse_name(name)
    assert classify_mod.parse_name("step-12") is None


def write_checkpoints(root, n: int, uncommitted: bool = True) -> list[str]:
    """``n`` committed checkpoints (no retention) and one torn save, written by mlcost_pl's own commit path."""
    store = CheckpointStorage(str(root))
    names = []
    for step in range(1, n + 1):
        ref, _ = manifest.commit_checkpoint(store, {manifest.CKPT_FILE: b"x" * (1000 * step)}, step * 10)
        names.append(ref.name)
    manifest.write_progress(store, n * 10, 0)
    if uncommitted:
        torn = manifest.new_checkpoint_name(n * 10 + 10)
        store.write_atomic(f"{torn}/{manifest.CKPT_FILE}", b"partial")
        names.append(torn)
    return names


def test_groups_of_a_project_tree(tmp_path):
    names = write_checkpoints(tmp_path / "train/run-a/checkpoints", 4)
    export = tmp_path / "export/run-a"
    export.mkdir(parents=True)
    for f in ("model.onnx", "model.int8.onnx", "report.json", "report.md", "manifest.json", "verify_set.npz"):
        (export / f).write_bytes(b"e" * 100)
    for folder, group in (("data/digits-optimized", "dataset"), ("data/features/emb-v1", "features")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "index.json").write_text(json.dumps({"chunks": [], "config": {}}))
        (tmp_path / folder / "chunk-0-0.bin").write_bytes(b"d" * 500)
    split_root = tmp_path / "data/digits-streaming"  # mlcost_pl.data.optimize: a manifest above one folder per split
    for split in ("train", "val"):
        (split_root / split).mkdir(parents=True)
        (split_root / split / "index.json").write_text("{}")
        (split_root / split / "chunk-0-0.zstd.bin").write_bytes(b"c" * 50)
    (split_root / "manifest.json").write_text("{}")
    shards = tmp_path / "cache/store/v1" / ("a" * 32)  # mlcost_pl.data.feature_store
    shards.mkdir(parents=True)
    (shards / f"{'b' * 32}.npz").write_bytes(b"npz")
    (shards / "meta.json").write_text("{}")
    (tmp_path / "train/run-a/csv").mkdir()
    (tmp_path / "train/run-a/csv/metrics.csv").write_text("step,loss\n")
    (tmp_path / "train/run-a/train.log").write_text("log")
    (tmp_path / "temporary").mkdir()
    (tmp_path / "temporary/scratch.bin").write_bytes(b"t" * 10)
    (tmp_path / "notes.txt").write_text("n")

    c = classify(scan(str(tmp_path)), keep_last=2, live_days=1)
    g = c.groups
    ck = "train/run-a/checkpoints/"
    assert g[f"{ck}{names[3]}/checkpoint.ckpt"] == g[f"{ck}{names[2]}/MANIFEST.json"] == "checkpoint_kept"
    assert g[f"{ck}{names[1]}/checkpoint.ckpt"] == g[f"{ck}{names[0]}/checkpoint.ckpt"] == "checkpoint_old"
    assert g[f"{ck}{names[4]}/checkpoint.ckpt"] == "checkpoint_uncommitted"
    assert g[f"{ck}progress.json"] == "checkpoint_kept"
    assert all(g[f"export/run-a/{f}"] == "export" for f in ("model.onnx", "report.json", "verify_set.npz"))
    assert g["data/digits-optimized/chunk-0-0.bin"] == "dataset" and g["data/features/emb-v1/index.json"] == "features"
    assert g["data/digits-streaming/manifest.json"] == g["data/digits-streaming/val/chunk-0-0.zstd.bin"] == "dataset"
    assert g[f"cache/store/v1/{'a' * 32}/{'b' * 32}.npz"] == g[f"cache/store/v1/{'a' * 32}/meta.json"] == "features"
    assert g["train/run-a/csv/metrics.csv"] == g["train/run-a/train.log"] == "logs"
    assert g["temporary/scratch.bin"] == "temporary" and g["notes.txt"] == "other"
    (run,) = c.runs
    assert run.prefix == ck and run.live and run.newest_committed.name == names[3]
    assert [f.name for f in run.folders] == names[::-1]
    assert c.folder_of(f"{ck}{names[0]}/checkpoint.ckpt")[1].group == "checkpoint_old"


def test_bad_arguments_are_named(tmp_path):
    inv = scan(str(tmp_path))
    with pytest.raises(ValueError, match="keep_last must be"):
        classify(inv, keep_last=0)
    with pytest.raises(ValueError, match="live_days must be"):
        classify(inv, live_days=-1)
    with pytest.raises(FileNotFoundError, match="no such bucket or folder"):
        scan(str(tmp_path / "missing"))
