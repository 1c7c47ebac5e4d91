"""Compose the recipes' Hydra configs in tests, with the paths pointed at a tmp folder."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mlcost_pl.config import register_resolvers

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def compose_cfg(config_name: str = "train", overrides: list[str] | None = None, tmp_path: Path | None = None) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` as the CLI would, with ``HydraConfig`` set so ``${hydra:...}`` resolves."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    if tmp_path is not None:
        with open_dict(cfg):
            cfg.paths.log_dir = str(tmp_path / "outputs")
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    return cfg


def fast_overrides(*extra: str) -> list[str]:
    """Overrides for a seconds-long CPU run on digits."""
    return [
        "model=tiny_cnn",
        "data.image_size=16",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.enable_progress_bar=false",
        *extra,
    ]
