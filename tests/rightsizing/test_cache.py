"""The on-disk search cache: keys, atomic writes, corrupt files."""

from __future__ import annotations

from torch import nn

from mlcost_pl.rightsizing.cache import SearchCache, cache_key, model_signature


def test_put_get_keeps_other_entries_and_leaves_no_temp_files(tmp_path):
    cache = SearchCache(tmp_path / "sub")
    assert cache.get("a") is None
    cache.put("a", {"batch_size": 1})
    cache.put("b", {"batch_size": 2})
    again = SearchCache(tmp_path / "sub")
    assert again.get("a") == {"batch_size": 1} and again.get("b") == {"batch_size": 2}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir() if p.suffix != ".lock") == ["batch_size_search.json"]


def test_corrupt_file_reads_as_empty_and_is_replaced(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    cache = SearchCache(path)
    assert cache.get("a") is None
    cache.put("a", {"batch_size": 3})
    assert SearchCache(path).get("a") == {"batch_size": 3}


def test_keys_separate_model_device_input_and_precision():
    sig = model_signature(nn.Linear(4, 2))
    assert sig == model_signature(nn.Linear(4, 2))  # weights do not matter
    assert sig != model_signature(nn.Linear(4, 3))
    frozen = nn.Linear(4, 2)
    frozen.weight.requires_grad_(False)
    assert sig != model_signature(frozen)
    base = cache_key(sig, "cpu", (1, 8, 8), "32-true", mode="max_fit")
    assert base == cache_key(sig, "cpu", (1, 8, 8), "32-true", mode="max_fit")
    others = [
        cache_key(sig, "cuda:H100:80", (1, 8, 8), "32-true", mode="max_fit"),
        cache_key(sig, "cpu", (1, 16, 16), "32-true", mode="max_fit"),
        cache_key(sig, "cpu", (1, 8, 8), "bf16-mixed", mode="max_fit"),
        cache_key(sig, "cpu", (1, 8, 8), "32-true", mode="throughput"),
    ]
    assert len({base, *others}) == 5
