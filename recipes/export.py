"""Export a trained checkpoint: ``uv run python -m recipes.export ckpt_path=<path or URL> [overrides]``.

Reads top to bottom: load the checkpoint (model + data from its stored training config), export, gate, report.
``verify=<out_dir>`` re-checks an existing export instead.
"""

from __future__ import annotations

import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlcost_pl.config import register_resolvers
from mlcost_pl.errors import UserInputError
from mlcost_pl.summary import print_summary
from recipes._cli import run_cli

register_resolvers()

GATE_FAILED_EXIT = 3


def export_from_cfg(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` to ``cfg.out_dir`` (or verify ``cfg.verify``); return the report."""
    # Imported here: Hydra has composed and validated the config before torch and Lightning load.
    import lightning as L

    from mlcost_pl.export import export, load_training_checkpoint, verify
    from mlcost_pl.export.report import verify_command

    if cfg.get("verify"):
        result = verify(cfg.verify)
        print_summary("mlcost_pl export verify", [("folder", cfg.verify), *result.items()])
        return result
    if not cfg.get("ckpt_path"):
        raise UserInputError("ckpt_path is required: ckpt_path=<path or URL of a recipes.train .ckpt> (or verify=<out_dir>)")
    overrides = cfg.get("data_overrides")
    options = OmegaConf.to_container(cfg.export, resolve=True)
    trust = bool(options.pop("trust_checkpoint", False))
    ckpt = load_training_checkpoint(cfg.ckpt_path, OmegaConf.to_container(overrides, resolve=True) if overrides else {},
                                    trust_checkpoint=trust)
    L.seed_everything(cfg.seed, workers=True)
    source = {"ckpt_path": str(cfg.ckpt_path), "model": ckpt.config.get("model"), "data": ckpt.config.get("data")}
    report = export(ckpt.module, ckpt.datamodule, cfg.out_dir, source=source, **options)

    variants = report["variants"]
    rows: list[tuple[str, object]] = [("export", report["out_dir"]), ("parity max abs diff", report["parity"]["max_abs"])]
    for name, v in variants.items():
        lat = v["latency_ms"].get("8") or next(iter(v["latency_ms"].values()))
        size = f", {v['bytes'] / 1e6:.2f} MB" if v.get("bytes") else ""
        rows.append((name, f"metric {v['metric']:.4f}, p50 {lat['p50']:.2f} ms{size}, ${v['usd_per_million']:.4f}/1M"))
    if report.get("gate"):
        kept = report["gate"]["kept_fp32"]
        rows.append(("gate", f"drop {report['gate']['drop']:.4f} <= {report['gate']['max_drop']}, "
                             f"{len(kept)} layer(s) kept in fp32"))
    rows.append(("verify with", verify_command(report["out_dir"])))
    print_summary("mlcost_pl export", rows)
    return report


def run(cfg: DictConfig) -> dict[str, Any]:
    """``export_from_cfg`` with the CLI's error handling: bad input is one line and exit 2; a failed accuracy gate
    prints its figures and exits 3."""
    from mlcost_pl.export import GateFailedError

    try:
        return run_cli(export_from_cfg, cfg)
    except GateFailedError as err:
        print(f"error: GateFailedError: {err}", file=sys.stderr)
        sys.exit(GATE_FAILED_EXIT)


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run(cfg)


if __name__ == "__main__":
    main()
