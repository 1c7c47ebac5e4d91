"""Load a training checkpoint back into a model and its DataModule: the one place exports read checkpoints."""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass
from typing import Any

from mlcost_pl.config import CONFIG_KEY
from mlcost_pl.errors import MissingInputError, UnreadableInputError, UserInputError
from mlcost_pl.utils.fs import get_fs


@dataclass
class TrainingCheckpoint:
    """What :func:`load_training_checkpoint` rebuilt: the module (eval mode, CPU), its DataModule and config."""

    module: Any
    datamodule: Any
    config: dict[str, Any]
    url: str


#: Packages whose classes a checkpoint's stored config may name in ``_target_`` without ``trust_checkpoint``.
TRUSTED_TARGETS = ("mlcost_pl", "torchvision", "torch.nn")


def _read_checkpoint(url: str, trust: bool = False) -> tuple[dict[str, Any], str]:
    """``(checkpoint, url of the file read)``; a SpotCheckpoint directory resolves to its newest verified file."""
    import torch

    fs, path = get_fs(url)
    if not fs.exists(path):
        raise MissingInputError(f"ckpt_path={url}: no such file")
    if fs.isdir(path):
        # A SpotCheckpoint directory (newest checkpoint that verifies) or one committed checkpoint folder.
        from mlcost_pl.checkpoint import CheckpointInvalid, resolve_checkpoint

        try:
            resolved = resolve_checkpoint(url)
        except (FileNotFoundError, CheckpointInvalid) as err:
            raise UserInputError(
                f"ckpt_path={url} is a directory with no verified SpotCheckpoint checkpoint in it ({err}); "
                "give a .ckpt file or a SpotCheckpoint directory"
            ) from err
        fs, path = get_fs(resolved)
        url = resolved
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UnreadableInputError(f"ckpt_path={url}: cannot read it ({err})") from err
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:  # not a refused object: a damaged or foreign file
            raise UserInputError(f"ckpt_path={url}: not a readable PyTorch checkpoint (UnpicklingError)") from err
        # weights_only refuses pickled objects other than tensors and plain containers: unpickling them can run code.
        first = f"it pickles {found.group(1)}"
        raise UserInputError(
            f"ckpt_path={url}: holds pickled Python objects that safe loading (torch.load weights_only=True) refuses "
            f"({first}); loading them runs code from the file: pass export.trust_checkpoint=true only if you trust "
            "where it came from"
        ) from err
    except Exception as err:  # noqa: BLE001 - truncated zip, wrong format, ...
        raise UserInputError(f"ckpt_path={url}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserInputError(f"ckpt_path={url}: not a Lightning checkpoint (no 'state_dict' key)")
    return ckpt, str(url)


def untrusted_targets(config: Any, allowed: tuple[str, ...] = TRUSTED_TARGETS) -> list[str]:
    """Every ``_target_`` in ``config`` (nested anywhere) outside the ``allowed`` packages, as ``key.path=target``.

    Example:
        >>> untrusted_targets({"model": {"_target_": "mlcost_pl.models.ImageClassifier"},
        ...                    "data": {"_target_": "os.system", "_args_": ["echo hi"]}})
        ['data._target_=os.system']
    """
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not any(str(target) == p or str(target).startswith(f"{p}.") for p in allowed):
                found.append(f"{path}_target_={target}")
            for key, value in node.items():
                walk(value, f"{path}{key}.")
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{path}{i}.")

    walk(config, "")
    return found


def load_training_checkpoint(url: str, data_overrides: dict[str, Any] | None = None,
                             trust_checkpoint: bool = False) -> TrainingCheckpoint:
    """Rebuild the model and DataModule of a ``recipes.train`` checkpoint.

    ``url`` is a local path or fsspec URL to a ``.ckpt`` file, or a SpotCheckpoint directory (its newest checkpoint
    that verifies is used) or one of its checkpoint folders.

    The training config comes from ``checkpoint["mlcost_training_config"]``, written by
    :class:`~mlcost_pl.callbacks.StoreConfig`; ``data_overrides`` are merged into its ``data`` node (e.g. a new
    ``root`` for the validation images).

    Raises:
        FileNotFoundError: nothing at ``url``.
        ValueError: not a readable checkpoint, pickled objects or a ``_target_`` outside the allow-list without
            ``trust_checkpoint``, no stored training config, or weights that do not fit the model.

    Example:
        >>> ckpt = load_training_checkpoint("outputs/train/default/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> ckpt.module, ckpt.datamodule  # doctest: +SKIP
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    ckpt, url = _read_checkpoint(url, trust_checkpoint)
    config = ckpt.get(CONFIG_KEY)
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise UserInputError(
            f"ckpt_path={url}: no training config stored under {CONFIG_KEY!r} (train with recipes.train, which adds "
            "the StoreConfig callback, or call mlcost_pl.export.export(module, datamodule, out_dir) from Python)"
        )
    data_cfg = OmegaConf.merge(OmegaConf.create(config["data"]), OmegaConf.create(dict(data_overrides or {})))
    model_cfg = {k: v for k, v in config["model"].items() if k not in ("optimizer", "scheduler")}  # not built here
    unsafe = [] if trust_checkpoint else untrusted_targets(
        {"model": model_cfg, "data": OmegaConf.to_container(data_cfg, resolve=False)})
    if unsafe:
        raise UserInputError(
            f"ckpt_path={url}: its stored config names classes outside {', '.join(TRUSTED_TARGETS)} ({', '.join(unsafe)}); "
            "building them runs their code: pass export.trust_checkpoint=true only if you trust where the file came from"
        )
    datamodule = instantiate(data_cfg)
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
        raise UserInputError(f"ckpt_path={url}: weights do not fit the stored model config ({first})") from err
    module.eval()
    return TrainingCheckpoint(module=module, datamodule=datamodule, config=config, url=str(url))
