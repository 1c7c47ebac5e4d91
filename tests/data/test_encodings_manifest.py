"""Pure logic of the data costs feature: storage-aware encodings and the optimized-dataset manifest (no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlcost_pl.data import encodings
from mlcost_pl.data.manifest import FORMAT_VERSION, DatasetInvalid, Manifest, SplitInfo


def test_uint8_images_are_4x_smaller_and_within_half_a_step():
    x = np.random.default_rng(0).normal(size=(50, 1, 8, 8)).astype(np.float32)
    spec = encodings.plan_encoding(x, "uint8", "image")
    stored, scale = encodings.encode(x, spec)
    assert stored.dtype == np.uint8 and stored.nbytes * 4 == x.nbytes and scale is None
    step = (spec["hi"] - spec["lo"]) / 255
    assert encodings.max_abs_error(x, spec) <= step / 2 + 1e-6
    assert "float32 -> uint8" in encodings.describe(spec)


@pytest.mark.parametrize(("dtype", "ratio", "tol"), [("float32", 1, 0.0), ("float16", 2, 1e-2), ("int8", 4, 2e-2)])
def test_feature_dtypes(dtype, ratio, tol):
    x = np.random.default_rng(1).normal(size=(20, 64)).astype(np.float32)
    spec = encodings.plan_encoding(x, dtype, "feature")
    stored, scale = encodings.encode(x, spec)
    assert stored.nbytes * ratio == x.nbytes
    back = encodings.decode(stored, spec, scale)
    assert back.dtype == np.float32 and np.abs(back - x).max() <= tol * np.abs(x).max()
    one = encodings.decode(stored[3], spec, None if scale is None else scale[3])  # per sample, as the stream decodes
    np.testing.assert_allclose(one, back[3])


def test_encoded_images_are_recognised_and_bad_dtypes_named():
    assert encodings.image_format(b"\x89PNG\r\n\x1a\nrest") == "png" and encodings.image_format(b"\xff\xd8\xff\xe0") == "jpeg"
    assert encodings.image_format(b"plain") is None
    with pytest.raises(ValueError, match=r"data.feature_dtype='bf16'.*float16"):
        encodings.plan_encoding(np.zeros((2, 3), np.float32), "bf16", "feature")


def _manifest() -> Manifest:
    return Manifest(splits={"train": SplitInfo(count=3, raw_bytes=300, stored_bytes=60, chunks={"chunk-0-0.bin": 40})},
                    encodings={"x": {"kind": "image", "dtype": "uint8"}}, num_classes=2, content_hash="ab", compression="zstd")


def test_manifest_round_trip_and_checks():
    m = _manifest()
    back = Manifest.from_json(m.to_json())
    assert back == m and back.saving == pytest.approx(0.8)
    index = {"chunks": [{"filename": "chunk-0-0.bin", "chunk_size": 3}]}
    back.check_index("train", index)
    back.check_sizes("train", {"chunk-0-0.bin": 40, "index.json": 20})
    with pytest.raises(DatasetInvalid, match="does not match its manifest"):
        back.check_index("train", {"chunks": [{"filename": "chunk-0-1.bin", "chunk_size": 3}]}, "s3://b/d")
    with pytest.raises(DatasetInvalid, match=r"chunk train/chunk-0-0.bin has 39 bytes"):
        back.check_sizes("train", {"chunk-0-0.bin": 39})


def test_manifest_from_another_version_or_not_a_manifest_is_one_line():
    data = json.loads(_manifest().to_json())
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(DatasetInvalid, match=f"format version {FORMAT_VERSION + 1}, this mlcost_pl reads version"):
        Manifest.from_json(json.dumps(data), "/d")
    with pytest.raises(DatasetInvalid, match="not an mlcost_pl optimized-dataset manifest"):
        Manifest.from_json("{}", "/d")
    with pytest.raises(DatasetInvalid, match="not valid JSON"):
        Manifest.from_json("{", "/d")
