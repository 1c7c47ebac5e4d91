"""Pure checkpoint logic, no Trainer: atomic writes, manifests, verification, fallback, retention, async writer."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
import torch

from mlcost_pl.checkpoint import (
    AsyncWriter,
    CheckpointDirError,
    CheckpointInvalid,
    CheckpointStorage,
    CheckpointWriteError,
    apply_retention,
    commit_checkpoint,
    find_latest_valid,
    resolve_checkpoint,
    snapshot_to_cpu,
    verify,
    young_daly_interval,
)
from mlcost_pl.checkpoint.manifest import CKPT_FILE, MANIFEST, list_checkpoints, load_bytes, serialize


@pytest.fixture(params=["local", "memory", "s3"])
def store_url(request, tmp_path):
    """A fresh checkpoint directory on each backend, with its storage options."""
    if request.param == "local":
        return str(tmp_path / "ckpts"), None
    if request.param == "memory":
        return f"memory://spot-{uuid.uuid4().hex}/ckpts", None
    s3 = request.getfixturevalue("s3_server")
    return f"{s3['bucket']}/{uuid.uuid4().hex}/ckpts", s3["storage_options"]


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"step": step, "w": torch.randn(64, 64, generator=g)}


def _commit(store: CheckpointStorage, step: int):
    ref, _ = commit_checkpoint(store, {CKPT_FILE: serialize(_state(step))}, step, {"reason": "test"})
    return ref


def test_atomic_local_write_leaves_no_temporary_files(tmp_path):
    store = CheckpointStorage(str(tmp_path / "d"))
    store.write_atomic("x/y.bin", b"a" * 10)
    store.write_atomic("x/y.bin", b"b" * 3)
    assert (tmp_path / "d" / "x" / "y.bin").read_bytes() == b"bbb"
    assert os.listdir(tmp_path / "d" / "x") == ["y.bin"]


def test_commit_verify_and_find_latest(store_url):
    url, opts = store_url
    store = CheckpointStorage(url, opts)
    assert find_latest_valid(store) is None
    refs = [_commit(store, s) for s in (2, 4, 6)]
    latest = find_latest_valid(url, opts)
    assert latest.name == refs[-1].name and latest.global_step == 6
    manifest, data = verify(store, latest.name)
    assert manifest["files"][CKPT_FILE]["size"] == len(data)
    assert {"torch", "python", "mlcost_pl"} <= set(manifest["versions"])
    assert load_bytes(data)["step"] == 6
    assert not store.exists("latest")  # no pointer to keep in step: the newest is found by listing


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "uncommitted", "bad_manifest"])
def test_damaged_newest_is_skipped_with_a_warning_naming_it(store_url, damage):
    url, opts = store_url
    store = CheckpointStorage(url, opts)
    good = _commit(store, 4)
    bad = _commit(store, 8)
    path = f"{bad.name}/{CKPT_FILE}"
    data = store.read(path)
    if damage == "corrupt":
        store.write_atomic(path, data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        store.write_atomic(path, data[: len(data) // 2])
    elif damage == "uncommitted":
        store.remove(f"{bad.name}/{MANIFEST}")
    else:
        store.write_atomic(f"{bad.name}/{MANIFEST}", b'{"format": "mlcost_pl.spot_checkpoint/1", "fi')
    with pytest.warns(UserWarning, match=bad.name):
        ref = find_latest_valid(store)
    assert ref.name == good.name
    with pytest.raises(CheckpointInvalid, match=bad.name):
        verify(store, bad.name)


def test_retention_keeps_last_k_and_touches_nothing_else(store_url):
    url, opts = store_url
    store = CheckpointStorage(url, opts)
    store.write_atomic("notes.txt", b"mine")
    store.write_atomic("other/step-1.txt", b"mine too")
    refs = [_commit(store, s) for s in (1, 2, 3, 4)]
    # an uncommitted leftover older than the kept ones is debris and goes too
    deleted = apply_retention(store, 2, refs[-1].name)
    assert deleted == [refs[1].name, refs[0].name]
    assert list_checkpoints(store) == [refs[3].name, refs[2].name]
    assert store.read("notes.txt") == b"mine" and store.read("other/step-1.txt") == b"mine too"
    assert find_latest_valid(store).name == refs[3].name
    with pytest.raises(ValueError, match="keep_last"):
        apply_retention(store, 0, refs[-1].name)


def test_retention_waits_for_enough_committed(tmp_path):
    store = CheckpointStorage(str(tmp_path))
    a = _commit(store, 1)
    b = _commit(store, 2)
    store.remove(f"{b.name}/{MANIFEST}")  # b never committed: a must survive
    assert apply_retention(store, 1, b.name) == []
    assert find_latest_valid(store, on_skip=None).name == a.name


def test_resolve_checkpoint(tmp_path):
    store = CheckpointStorage(str(tmp_path / "run"))
    ref = _commit(store, 3)
    assert resolve_checkpoint(str(tmp_path / "run")) == ref.file_url
    assert resolve_checkpoint(ref.url) == ref.file_url
    assert resolve_checkpoint(ref.file_url) == ref.file_url
    with pytest.raises(FileNotFoundError, match="empty"):
        resolve_checkpoint(str(tmp_path / "empty"))


def test_check_writable_names_url_and_cause(tmp_path, s3_server):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointDirError, match=r"file/sub is not writable: (NotADirectoryError|FileExistsError)"):
        CheckpointStorage(str(blocker / "sub")).check_writable()
    opts = {**s3_server["storage_options"], "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"}}
    opts["config_kwargs"] = {"connect_timeout": 1, "retries": {"max_attempts": 1}}
    opts["retries"] = 1
    with pytest.raises(CheckpointDirError, match="s3://test-bucket/x is not writable") as info:
        CheckpointStorage("s3://test-bucket/x", opts).check_writable()
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointDirError, match="no-such-bucket"):
        CheckpointStorage("s3://no-such-bucket/x", s3_server["storage_options"]).check_writable()


def test_young_daly():
    assert young_daly_interval(2.0, 3600.0) == pytest.approx(120.0)
    with pytest.raises(ValueError, match="mtbf_seconds"):
        young_daly_interval(1.0, 0)
    with pytest.raises(ValueError, match="save_seconds"):
        young_daly_interval(-1.0, 10)


def test_snapshot_is_independent_and_reuses_buffers():
    from mlcost_pl.checkpoint import BufferPool

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "meta": ("x", [1, 2])}
    pool = BufferPool()
    snap = snapshot_to_cpu(state, pool)
    first = snap["model"]["weight"]
    before = first.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert torch.equal(snap["model"]["weight"], before)
    assert snap["meta"] == ("x", [1, 2]) and type(snap["model"]) is type(state["model"])
    allocated = pool.bytes
    snap2 = snapshot_to_cpu({"model": model.state_dict(), "opt": opt.state_dict(), "meta": ("x", [1, 2])}, pool)
    assert pool.bytes == allocated and snap2["model"]["weight"].data_ptr() == first.data_ptr()
    assert torch.equal(snap2["model"]["weight"], model.weight)


def test_async_writer_retries_then_succeeds_and_is_one_slot():
    attempts = []
    gate = threading.Event()

    def flaky():
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise OSError("transient")
        gate.wait(5)
        return "done"

    w = AsyncWriter(retries=3, backoff_s=0.01)
    assert w.submit(flaky)
    time.sleep(0.1)
    assert w.busy and not w.submit(lambda: "second")
    gate.set()
    w.wait()
    assert w.pop_results() == ["done"] and len(attempts) == 3


def test_async_writer_error_is_raised_not_lost():
    w = AsyncWriter(retries=1, backoff_s=0.01)

    def broken():
        raise PermissionError("bucket says no")

    w.submit(broken)
    with pytest.raises(CheckpointWriteError, match="bucket says no"):
        w.wait()
    w.wait()  # raised once


def test_manifest_records_what_it_should(tmp_path):
    store = CheckpointStorage(str(tmp_path))
    ref = _commit(store, 5)
    manifest = json.loads(store.read(f"{ref.name}/{MANIFEST}"))
    assert manifest["global_step"] == 5 and manifest["reason"] == "test"
    assert len(manifest["files"][CKPT_FILE]["sha256"]) == 64 and manifest["created_unix"] > 0
