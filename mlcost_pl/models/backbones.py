"""Build a torchvision classification network by name and split it into ``backbone`` and ``head``.

The split is what transfer learning and export need: ``backbone`` maps images to a feature vector, ``head`` maps
features to logits. Input channels and class count are adapted in place of the original layers.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from mlcost_pl.errors import UserInputError

# Attribute names under which torchvision classification models keep their classifier, in lookup order.
_HEAD_ATTRS = ("fc", "classifier", "heads", "head")


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`: every torchvision classification model plus ``tiny_cnn``."""
    from torchvision.models import list_models
    import torchvision.models as tvm

    return sorted(set(list_models(module=tvm)) | {"tiny_cnn"})


class TinyCNN(nn.Module):
    """A small conv net for tests, demos and CPU-only quick runs (~20k parameters).

    It follows the torchvision layout (``features`` then ``fc``) so the same backbone/head split applies.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _unknown_backbone(name: str) -> UserInputError:
    names = available_backbones()
    near = difflib.get_close_matches(name, names, n=5)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    return UserInputError(f"model.backbone={name!r} is not a torchvision classification model.{hint} Valid names: {', '.join(names)}")


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_channels:
                    return
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                    child.padding_mode,
                )
                with torch.no_grad():
                    # Keep pretrained filters meaningful: average over the old input channels and repeat.
                    mean = child.weight.mean(dim=1, keepdim=True)
                    new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (child.in_channels / in_channels))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, child_name, new)
                return
    raise UserInputError("model has no Conv2d layer whose input channels could be adapted (model.in_channels)")


def _last_linear(module: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """Return (parent, attribute, layer) for the last ``nn.Linear`` inside ``module``."""
    found: tuple[nn.Module, str, nn.Linear] | None = None
    for _, parent in module.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, child_name, child)
    if found is None:
        raise UserInputError(f"classifier {type(module).__name__} has no nn.Linear layer to resize")
    return found


def build_backbone(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    weights: str | None = None,
    bn_momentum: float | None = 0.1,
) -> tuple[nn.Module, nn.Module, int]:
    """Build ``name`` and split it.

    Args:
        name: a torchvision classification model name (``resnet18``, ``mobilenet_v3_small``, ...) or ``tiny_cnn``.
        num_classes: size of the output layer.
        in_channels: channels of the input images; the first convolution is adapted when it differs from 3.
        weights: torchvision weights enum name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) or ``None`` for random init.
            Downloading weights needs network access.
        bn_momentum: momentum of every BatchNorm layer's running statistics (PyTorch's default 0.1). Some torchvision
            architectures ship 0.01, tuned for ImageNet-length runs (MobileNetV3, EfficientNetV2, MaxViT): in a run of a
            few hundred steps their running statistics stay near their initial values and the model is at chance
            level in eval mode while training accuracy looks fine. ``None`` keeps each architecture's own value.

    Returns:
        ``(backbone, head, num_features)``: ``head(backbone(x))`` gives logits.

    Raises:
        ValueError: unknown name (lists the valid ones), unknown weights, a ``bn_momentum`` outside (0, 1], or a
            model without a separable head.
    """
    if bn_momentum is not None and not 0.0 < bn_momentum <= 1.0:
        raise UserInputError(f"model.bn_momentum must be in (0, 1] or null (keep the architecture's), got {bn_momentum}")
    if name == "tiny_cnn":
        if weights is not None:
            raise UserInputError("model.weights: tiny_cnn has no pretrained weights; use model.weights_path")
        net: nn.Module = TinyCNN(num_classes=num_classes, in_channels=in_channels)
    else:
        import torchvision.models as tvm

        if name not in tvm.list_models(module=tvm):
            raise _unknown_backbone(name)
        kwargs: dict[str, Any] = {}
        if weights is not None:
            try:
                kwargs["weights"] = tvm.get_model_weights(name)[weights]
            except KeyError:
                valid = [w.name for w in tvm.get_model_weights(name)] + ["DEFAULT"]
                raise UserInputError(f"model.weights={weights!r} is not a weights name of {name}; valid: {valid}") from None
        else:
            kwargs["num_classes"] = num_classes
        net = tvm.get_model(name, **kwargs)
        if in_channels != 3:
            _replace_first_conv(net, in_channels)
    if bn_momentum is not None:
        set_bn_momentum(net, bn_momentum)

    for attr in _HEAD_ATTRS:
        head = getattr(net, attr, None)
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            break
    else:
        raise UserInputError(f"model.backbone={name!r}: no classifier found under {_HEAD_ATTRS}; it cannot be split")
    if isinstance(head, nn.Linear):
        if head.out_features != num_classes:
            head = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        parent, child_name, last = _last_linear(head)
        if last.out_features != num_classes:
            setattr(parent, child_name, nn.Linear(last.in_features, num_classes, bias=last.bias is not None))
    num_features = head.in_features if isinstance(head, nn.Linear) else _first_linear_in(head)
    setattr(net, attr, nn.Identity())
    return net, head, num_features


def set_bn_momentum(module: nn.Module, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm layer in ``module``; return how many were set."""
    count = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
            count += 1
    return count


def _first_linear_in(module: nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
    raise UserInputError(f"{type(module).__name__} has no nn.Linear")
