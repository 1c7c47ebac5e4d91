"""Load a training checkpoint back into a model and its DataModule: the one place exports read checkpoints."""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import Any

from mlcost_pl.config import CONFIG_KEY
from mlcost_pl.utils.fs import get_fs


@dataclass
class TrainingCheckpoint:
    """What :func:`load_training_checkpoint` rebuilt: the module (eval mode, CPU), its DataModule and config."""

    module: Any
    datamodule: Any
    config: dict[str, Any]
    url: str


def _read_checkpoint(url: str) -> tuple[dict[str, Any], str]:
    """``(checkpoint, url of the file read)``; a SpotCheckpoint directory resolves to its newest verified file."""
    import torch

    fs, path = get_fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"ckpt_path={url}: no such file")
    if fs.isdir(path):
        # A SpotCheckpoint directory (newest checkpoint that verifies) or one committed checkpoint folder.
        from mlcost_pl.checkpoint import CheckpointInvalid, resolve_checkpoint

        try:
            resolved = resolve_checkpoint(url)
        except (FileNotFoundError, CheckpointInvalid) as err:
            raise ValueError(
                f"ckpt_path={url} is a directory with no verified SpotCheckpoint checkpoint in it ({err}); "
                "give a .ckpt file or a SpotCheckpoint directory"
            ) from err
        fs, path = get_fs(resolved)
        url = resolved
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise PermissionError(f"ckpt_path={url}: cannot read it ({err})") from err
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # A Lightning checkpoint may pickle hyper-parameters (as Lightning's own loader allows); the user named this file.
        try:
            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - any failure here means "not a checkpoint"
            raise ValueError(f"ckpt_path={url}: not a readable PyTorch checkpoint ({type(err).__name__})") from err
    except Exception as err:  # noqa: BLE001 - truncated zip, wrong format, ...
        raise ValueError(f"ckpt_path={url}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"ckpt_path={url}: not a Lightning checkpoint (no 'state_dict' key)")
    return ckpt, str(url)


def load_training_checkpoint(url: str, data_overrides: dict[str, Any] | None = None) -> TrainingCheckpoint:
    """Rebuild the model and DataModule of a ``recipes.train`` checkpoint.

    ``url`` is a local path or fsspec URL to a ``.ckpt`` file, or a SpotCheckpoint directory (its newest checkpoint
    that verifies is used) or one of its checkpoint folders.

    The training config comes from ``checkpoint["mlcost_training_config"]``, written by
    :class:`~mlcost_pl.callbacks.StoreConfig`; ``data_overrides`` are merged into its ``data`` node (e.g. a new
    ``root`` for the validation images).

    Raises:
        FileNotFoundError: nothing at ``url``.
        ValueError: not a readable checkpoint, no stored training config, or weights that do not fit the model.

    Example:
        >>> ckpt = load_training_checkpoint("outputs/train/default/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> ckpt.module, ckpt.datamodule  # doctest: +SKIP
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    ckpt, url = _read_checkpoint(url)
    config = ckpt.get(CONFIG_KEY)
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise ValueError(
            f"ckpt_path={url}: no training config stored under {CONFIG_KEY!r} (train with recipes.train, which adds "
            "the StoreConfig callback, or call mlcost_pl.export.export(module, datamodule, out_dir) from Python)"
        )
    data_cfg = OmegaConf.merge(OmegaConf.create(config["data"]), OmegaConf.create(dict(data_overrides or {})))
    datamodule = instantiate(data_cfg)
    model_cfg = {k: v for k, v in config["model"].items() if k not in ("optimizer", "scheduler")}
    for key in ("weights", "weights_path"):  # the checkpoint holds the weights: never download
        if key in model_cfg:
            model_cfg[key] = None
    if "num_classes" in model_cfg and hasattr(datamodule, "num_classes"):
        model_cfg["num_classes"] = datamodule.num_classes
    module = instantiate(OmegaConf.create(model_cfg))
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise ValueError(f"ckpt_path={url}: weights do not fit the stored model config ({first})") from err
    module.eval()
    return TrainingCheckpoint(module=module, datamodule=datamodule, config=config, url=str(url))
