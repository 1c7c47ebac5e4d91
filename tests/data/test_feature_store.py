"""FeatureStore: stale features are never served, shards survive concurrent writers and corruption, S3 on moto."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from mlcost_pl.data.feature_store import FORMAT_VERSION, FeatureStore, module_fingerprint, namespace

ROOT = Path(__file__).resolve().parents[2]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


def _run(store: FeatureStore, net: nn.Module, x: torch.Tensor, layer: str = "backbone") -> torch.Tensor:
    with torch.no_grad():
        return store.bind(net, layer)(net, x)


def test_key_covers_weights_bn_buffers_layer_mode_autocast_and_versions():
    net = _net()
    fp = module_fingerprint(net)
    net[1].running_mean += 1e-3  # a BatchNorm buffer, not a parameter
    assert module_fingerprint(net) != fp
    base = namespace(fp, "backbone", False, "none")
    assert len({base, namespace(fp, "backbone.layer4", False, "none"), namespace(fp, "backbone", True, "none"),
                namespace(fp, "backbone", False, "bfloat16")}) == 4
    assert FORMAT_VERSION == 1  # bumping it changes every namespace (it is part of the key)


def test_second_store_serves_everything_and_changed_weights_miss(tmp_path):
    net, x = _net(), torch.randn(10, 1, 8, 8)
    a = FeatureStore(str(tmp_path / "fs"), shard_rows=4)
    first = _run(a, net, x)
    a.flush()
    assert (a.total_hits, a.total_misses) == (0, 10) and len(list((tmp_path / "fs").rglob("*.npz"))) == 3
    b = FeatureStore(str(tmp_path / "fs"))
    assert torch.equal(_run(b, net, x), first) and (b.total_hits, b.total_misses) == (10, 0)
    assert b.saved_s > 0  # the compute time per sample measured by the first run
    mixed = torch.cat([x[:3], torch.randn(2, 1, 8, 8)])
    assert torch.equal(_run(b, net, mixed)[:3], first[:3]) and b.total_misses == 2
    net[1].running_var *= 2  # new BN statistics: a different backbone, nothing may be served
    c = FeatureStore(str(tmp_path / "fs"))
    out = _run(c, net, x)
    assert c.total_hits == 0 and not torch.equal(out, first)
    net.train()  # train mode: another namespace too
    with torch.no_grad():
        FeatureStore(str(tmp_path / "fs")).bind(net, "backbone")(net, x)


def test_corrupt_shard_is_a_miss_with_a_warning(tmp_path):
    net, x = _net(), torch.randn(6, 1, 8, 8)
    a = FeatureStore(str(tmp_path / "fs"), shard_rows=3)
    ref = _run(a, net, x)
    a.flush()
    shards = sorted((tmp_path / "fs").rglob("*.npz"))
    shards[0].write_bytes(shards[0].read_bytes()[:50])  # truncated
    b = FeatureStore(str(tmp_path / "fs"))
    with pytest.warns(UserWarning, match="unreadable.*recomputed"):
        out = _run(b, net, x)
    assert torch.allclose(out, ref) and (b.total_hits, b.total_misses) == (3, 3)


_WRITER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from mlcost_pl.data.feature_store import FeatureStore
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    store = FeatureStore(sys.argv[1], shard_rows=8)
    torch.manual_seed(int(sys.argv[2]))
    with torch.no_grad():
        for _ in range(20):
            store.bind(net, "backbone")(net, torch.randn(8, 1, 8, 8))
    store.flush()
""")


@pytest.mark.slow  # two fresh interpreters importing torch
def test_two_processes_writing_at_once_never_corrupt_the_store(tmp_path):
    url = str(tmp_path / "fs")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, str(seed)], cwd=ROOT) for seed in (1, 2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    store = FeatureStore(url)
    rows = store._load(next(iter(p.name for p in (tmp_path / "fs" / f"v{FORMAT_VERSION}").iterdir())))
    assert len(rows) == 2 * 20 * 8 and not store.corrupt_shards
    assert not list((tmp_path / "fs").rglob("*.tmp-*"))  # no half-written leftovers


def test_store_on_s3(s3_server):
    net, x = _net(), torch.randn(5, 1, 8, 8)
    url = f"{s3_server['bucket']}/features"
    a = FeatureStore(url, s3_server["storage_options"])
    a.check_writable()
    ref = _run(a, net, x)
    a.flush()
    b = FeatureStore(url, s3_server["storage_options"])
    assert torch.equal(_run(b, net, x), ref) and b.total_misses == 0


def test_unwritable_url_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"cache_features=.*file/fs is not writable"):
        FeatureStore(str(tmp_path / "file" / "fs")).check_writable()
    with pytest.raises(ValueError, match="cache_features"):
        FeatureStore("")
