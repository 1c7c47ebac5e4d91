"""The manifest of an optimized dataset: what it holds, how it was encoded, and a check that its chunks match it.

An optimized dataset is a folder (local path or fsspec URL) with one litdata dataset per split (``train/``, ``val/``,
``test/``, each an ``index.json`` plus compressed chunks) and ``manifest.json`` at the root. The manifest is written
last, so a folder without one was never completed and is refused. It records, per split, the sample count, the bytes
the DataModule fed (the float32 tensors: "raw") and the bytes stored, each chunk's name and size; the encodings; the
source config; and a content hash of the encoded samples. Pure Python: no torch, no Lightning, no litdata import.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = "mlcost_pl.optimized_dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")


class DatasetInvalid(ValueError):
    """An optimized dataset cannot be used as it is (the message names the URL and the cause)."""


@dataclass
class SplitInfo:
    count: int
    raw_bytes: int
    stored_bytes: int
    chunks: dict[str, int] = field(default_factory=dict)  # chunk file name -> bytes


@dataclass
class Manifest:
    """What :func:`mlcost_pl.data.optimize.optimize_datamodule` wrote; see the module docstring."""

    splits: dict[str, SplitInfo]
    encodings: dict[str, dict[str, Any]]
    num_classes: int
    content_hash: str
    compression: str | None
    source: dict[str, Any] = field(default_factory=dict)
    litdata_version: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def raw_bytes(self) -> int:
        return sum(s.raw_bytes for s in self.splits.values())

    @property
    def stored_bytes(self) -> int:
        return sum(s.stored_bytes for s in self.splits.values())

    @property
    def saving(self) -> float:
        """Share of the raw bytes saved (0.75 = stored is 4x smaller)."""
        return 1.0 - self.stored_bytes / self.raw_bytes if self.raw_bytes else 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, url: str = "") -> Manifest:
        """Parse and version-check a manifest.

        Raises:
            DatasetInvalid: not a manifest, or written by an incompatible format version.
        """
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            raise DatasetInvalid(f"data.uri={url}: {MANIFEST_NAME} is not valid JSON ({err})") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetInvalid(f"data.uri={url}: {MANIFEST_NAME} is not an mlcost_pl optimized-dataset manifest")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetInvalid(
                f"data.uri={url}: written with dataset format version {version}, this mlcost_pl reads version "
                f"{FORMAT_VERSION}; re-run `python -m recipes.data optimize` with this version"
            )
        try:
            splits = {k: SplitInfo(**v) for k, v in data.pop("splits").items()}
            return cls(splits=splits, **data)
        except (KeyError, TypeError) as err:
            raise DatasetInvalid(f"data.uri={url}: {MANIFEST_NAME} lacks a field or has an unknown one ({err})") from err

    def check_index(self, split: str, index: dict[str, Any], url: str = "") -> None:
        """Check a split's litdata ``index.json`` against the manifest (chunk names, sizes, sample count).

        Raises:
            DatasetInvalid: the chunks on the store are not the ones the manifest describes.
        """
        info = self.splits[split]
        chunks = {c["filename"]: int(c.get("chunk_bytes", -1)) for c in index.get("chunks", [])}
        count = sum(int(c.get("chunk_size", 0)) for c in index.get("chunks", []))
        if set(chunks) != set(info.chunks) or count != info.count:
            raise DatasetInvalid(
                f"data.uri={url}: split {split!r} does not match its manifest: index lists {len(chunks)} chunks / "
                f"{count} samples, the manifest {len(info.chunks)} chunks / {info.count} samples (a partial "
                "overwrite or a copy from another dataset); re-run the optimize step"
            )

    def check_sizes(self, split: str, sizes: dict[str, int], url: str = "") -> None:
        """Check the chunk objects' sizes on the store (``sizes``: name -> bytes) against the manifest.

        Raises:
            DatasetInvalid: a chunk is missing or has another size.
        """
        for name, expected in self.splits[split].chunks.items():
            got = sizes.get(name)
            if got != expected:
                what = "is missing" if got is None else f"has {got} bytes, the manifest says {expected}"
                raise DatasetInvalid(f"data.uri={url}: chunk {split}/{name} {what}; re-run the optimize step")
