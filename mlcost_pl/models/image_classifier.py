"""ImageClassifier: a LightningModule over any torchvision classification backbone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchmetrics
from lightning.pytorch import LightningModule
from torch import nn
from typing_extensions import override

from mlcost_pl.errors import UserInputError
from mlcost_pl.models.backbones import build_backbone
from mlcost_pl.utils.fs import load_torch

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class ImageClassifier(LightningModule):
    """Image classification with a torchvision backbone split into ``backbone`` (features) and ``head`` (logits).

    Args:
        backbone: torchvision classification model name (``resnet18``, ``mobilenet_v3_small``, ...) or ``tiny_cnn``.
        num_classes: number of classes.
        in_channels: image channels (1 for digits); the first convolution is adapted.
        weights: torchvision weights enum name (``"DEFAULT"``) to start from ImageNet weights; downloads them.
        weights_path: local path or fsspec URL of a ``state_dict`` for the whole network (``backbone.*`` and
            ``head.*`` keys) or for the backbone alone (keys without prefix); loaded after ``weights``.
        optimizer: factory called with the parameters, e.g. ``functools.partial(torch.optim.AdamW, lr=1e-3)``
            (``_partial_: true`` in Hydra). Defaults to AdamW(lr=1e-3).
        scheduler: optional factory called with the optimizer; stepped per epoch unless it is a
            ``OneCycleLR``-style per-step scheduler (``scheduler_interval="step"``).
        scheduler_interval: ``"epoch"`` or ``"step"``.
        bn_momentum: momentum of every BatchNorm layer's running statistics (default 0.1, PyTorch's). torchvision's
            MobileNetV3, EfficientNetV2 and MaxViT ship 0.01 (for ImageNet-length runs), which leaves a short run at chance
            accuracy in eval mode; ``None`` keeps the architecture's own value.

    Raises:
        ValueError: unknown backbone (lists valid names), bad ``num_classes``/``in_channels``/``scheduler_interval``/
            ``bn_momentum``.
        FileNotFoundError: ``weights_path`` does not exist.

    Logged metrics: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``.

    Example:
        >>> model = ImageClassifier("tiny_cnn", num_classes=10, in_channels=1)
        >>> model(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 10,
        in_channels: int = 3,
        weights: str | None = None,
        weights_path: str | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        bn_momentum: float | None = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise UserInputError(f"num_classes must be >= 2, got {num_classes}")
        if in_channels < 1:
            raise UserInputError(f"in_channels must be >= 1, got {in_channels}")
        if scheduler_interval not in ("epoch", "step"):
            raise UserInputError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.backbone, self.head, self.num_features = build_backbone(backbone, num_classes, in_channels, weights,
                                                                       bn_momentum=bn_momentum)
        if weights_path is not None:
            self.load_weights(weights_path)
        # An empty config group (``scheduler=none``) arrives as an empty mapping: treat it as "not set".
        self.optimizer_factory = optimizer or None
        self.scheduler_factory = scheduler or None
        self.criterion = nn.CrossEntropyLoss()
        metric = torchmetrics.classification.MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.train_acc, self.val_acc, self.test_acc = metric.clone(), metric.clone(), metric.clone()

    def load_weights(self, url: str) -> None:
        """Load a full-network or backbone-only ``state_dict`` from a local path or fsspec URL."""
        state = load_torch(url)
        if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
            state = state["state_dict"]
        if any(k.startswith(("backbone.", "head.")) for k in state):
            own = {k: v for k, v in state.items() if k.startswith(("backbone.", "head."))}
            self.load_state_dict(own, strict=False)
            missing = [k for k in self.state_dict() if k.startswith("backbone.") and k not in own]
        else:
            missing, _ = self.backbone.load_state_dict(state, strict=False)
        if missing:
            raise UserInputError(f"model.weights_path={url}: backbone keys missing from the file: {missing[:5]}")

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def _step(self, batch: Any, stage: str, metric: torchmetrics.Metric) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        metric(logits, y)
        on_step = stage == "train"
        # sync_dist: the epoch mean covers every rank's batches under DDP (a scalar all-reduce; a no-op on one device).
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val", self.val_acc)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).argmax(dim=1)

    @override
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad] or list(self.parameters())
        factory = self.optimizer_factory or (lambda p: torch.optim.AdamW(p, lr=1e-3))
        optimizer = factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval}}
