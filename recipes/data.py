"""Optimize a dataset once: ``uv run python -m recipes.data optimize data=<cfg> out=<path or s3://...> [overrides]``.

Reads top to bottom: build the configured DataModule, write its splits with ``litdata.optimize`` (zstd chunks,
storage-aware encodings) and the manifest, print what was stored. Train from the result with
``uv run python -m recipes.train data=streaming data.uri=<out>``.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mlcost_pl.config import register_resolvers
from mlcost_pl.summary import print_summary
from recipes._cli import run_cli

register_resolvers()

COMMANDS = ("optimize",)
# Keys configs/data.yaml merges into the data node: options of the optimize step, not of the DataModule.
OPTIMIZE_KEYS = ("compression", "chunk_bytes", "optimize_workers", "image_dtype", "feature_dtype")


def optimize(cfg: DictConfig) -> dict[str, Any]:
    """Write ``cfg.data``'s splits to ``cfg.out``; return the manifest's figures."""
    from mlcost_pl.data.encodings import describe
    from mlcost_pl.data.optimize import optimize_datamodule

    data_cfg = cfg.data.copy()
    with open_dict(data_cfg):
        options = {k: data_cfg.pop(k, None) for k in OPTIMIZE_KEYS}
    source = OmegaConf.to_container(data_cfg, resolve=True)
    datamodule = instantiate(data_cfg)
    manifest = optimize_datamodule(
        datamodule,
        str(cfg.out),
        compression=options["compression"],
        chunk_bytes=options["chunk_bytes"] or "4MB",
        num_workers=int(options["optimize_workers"] or 1),
        image_dtype=options["image_dtype"] or "uint8",
        feature_dtype=options["feature_dtype"],
        endpoint_url=cfg.get("endpoint_url"),
        storage_options=OmegaConf.to_container(cfg.storage_options, resolve=True) if cfg.get("storage_options") else None,
        allow_http=bool(cfg.get("allow_http")),
        overwrite=bool(cfg.get("overwrite")),
        source={"data": source},
    )
    figures = {
        "data/raw_mb": manifest.raw_bytes / 2**20,
        "data/stored_mb": manifest.stored_bytes / 2**20,
        "data/compression_ratio": manifest.raw_bytes / manifest.stored_bytes,
        "data/saving": manifest.saving,
    }
    rows: list[tuple[str, object]] = [
        ("source", source.get("_target_", "?")),
        ("written to", str(cfg.out)),
        ("samples (train/val/test)", "/".join(str(s.count) for s in manifest.splits.values())),
        ("bytes as fed (float32)", f"{manifest.raw_bytes:,}"),
        ("bytes stored", f"{manifest.stored_bytes:,}"),
        ("smaller by", f"{100 * manifest.saving:.1f}% ({figures['data/compression_ratio']:.1f}x)"),
        ("encoding", describe(manifest.encodings["x"])),
        ("compression", manifest.compression or "none"),
        ("content hash", manifest.content_hash),
        ("train from it", f"python -m recipes.train data=streaming data.uri={cfg.out}"),
    ]
    print_summary("mlcost_pl data optimize", rows)
    return figures


@hydra.main(version_base="1.3", config_path="../configs", config_name="data")
def main(cfg: DictConfig) -> None:
    """Hydra entry point (the sub-command was taken off ``sys.argv`` before Hydra parsed it)."""
    run_cli(optimize, cfg)


def _command(argv: list[str]) -> str:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print(f"usage: python -m recipes.data {{{','.join(COMMANDS)}}} data=<cfg> out=<path or s3://...> [overrides]",
              file=sys.stderr)
        sys.exit(2)
    return argv.pop(1)


if __name__ == "__main__":
    _command(sys.argv)
    main()
