"""bitsandbytes export: a PyTorch model whose ``nn.Linear`` layers are Linear8bitLt (``bnb_int8``) or Linear4bit
NF4 (``bnb_nf4``), for PyTorch serving on CPU or CUDA. Convolutions stay fp32 (bitsandbytes has no conv layers)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from mlcost_pl.errors import MissingDependencyError, UserInputError

BNB_FORMATS = ("bnb_int8", "bnb_nf4")
_BNB_CPU_PACK_BLOCK_N = 32  # bitsandbytes' block_n for its AVX512-BF16 CPU 4-bit packing


def _import_bnb() -> Any:
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise MissingDependencyError("export.format=bnb_*: bitsandbytes is not installed: pip install bitsandbytes") from err
    return bnb


def linear_layers(model: nn.Module) -> list[str]:
    """Qualified names of the ``nn.Linear`` layers of ``model``."""
    return [name for name, m in model.named_modules() if type(m) is nn.Linear]


def check_linear(name: str, layer: nn.Linear, fmt: str) -> None:
    """Raise if bitsandbytes cannot hold ``layer``'s weight in ``fmt``.

    Raises:
        ValueError: an empty weight (0 in/out features), or a non-2-D weight, naming the layer and its shape.
    """
    shape = tuple(layer.weight.shape)
    if layer.weight.dim() != 2 or min(shape) < 1:
        raise UserInputError(f"export.format={fmt}: layer {name!r} has weight shape {shape}, which bitsandbytes cannot "
                         "quantize (needs a 2-D weight with at least one input and one output feature)")


def to_bnb(model: nn.Module, fmt: str, device: str = "cpu", keep_fp32: Sequence[str] = ()) -> nn.Module:
    """A copy of ``model`` with each ``nn.Linear`` (except ``keep_fp32``) replaced by its bitsandbytes counterpart.

    Each converted layer is checked with a forward pass on ``device``; a layer bitsandbytes rejects fails here
    with its name and shape rather than at serving time.

    Args:
        model: the fp32 model.
        fmt: ``"bnb_int8"`` (LLM.int8 with outlier threshold 6.0) or ``"bnb_nf4"`` (4-bit NormalFloat, fp32 compute).
        device: ``"cpu"`` or ``"cuda"``; the weights are quantized when moved there.
        keep_fp32: qualified names of Linear layers to leave unquantized (the accuracy gate's fallback).

    Raises:
        ValueError: unknown ``fmt``, no Linear layer to convert, or a layer whose shape bitsandbytes cannot handle.
        ImportError: bitsandbytes is missing.

    Example:
        >>> net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> q = to_bnb(net, "bnb_int8")  # doctest: +SKIP
    """
    if fmt not in BNB_FORMATS:
        raise UserInputError(f"export.format must be one of {BNB_FORMATS} here, got {fmt!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"export.device={device!r}: CUDA is not available on this machine")
    bnb = _import_bnb()
    model = copy.deepcopy(model).eval().cpu()
    names = linear_layers(model)
    if not names:
        raise UserInputError(f"export.format={fmt}: the model has no nn.Linear layer for bitsandbytes to quantize")
    for name in names:
        if name in keep_fp32:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer: nn.Linear = getattr(parent, child)
        check_linear(name, layer, fmt)
        w = layer.weight.data.clone()
        if fmt == "bnb_int8":
            new = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                      has_fp16_weights=False, threshold=6.0)
            new.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=layer.bias is not None,
                                    compute_dtype=torch.float32, quant_type="nf4")
            new.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
            if layer.out_features % _BNB_CPU_PACK_BLOCK_N:
                # bitsandbytes (checked 0.50.2) repacks 4-bit weights for its AVX512-BF16 CPU kernel on the first
                # eval-mode forward and asserts out_features % 32 == 0 there; keep such layers on the generic kernel.
                new.support_avx512bf16_for_cpu = False
        if layer.bias is not None:
            new.bias = nn.Parameter(layer.bias.data.clone(), requires_grad=False)
        try:
            new = new.to(device).eval()  # quantizes the weight; eval() takes the serving kernels' path
            with torch.inference_mode():
                new(torch.zeros(2, layer.in_features, device=device))
        except Exception as err:  # noqa: BLE001 - name the layer whatever bitsandbytes raised
            raise UserInputError(f"export.format={fmt}: bitsandbytes cannot run layer {name!r} with weight shape "
                             f"{tuple(w.shape)} on {device}: {type(err).__name__}: {err}") from err
        setattr(parent, child, new)
    return model.to(device)


def linear_errors(model: nn.Module, fmt: str, x: torch.Tensor) -> list[dict[str, Any]]:
    """Relative output error of each Linear layer when quantized alone, on the real inputs it sees for ``x``."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    model = model.eval().cpu()
    for name in linear_layers(model):
        layer = model.get_submodule(name)
        hooks.append(layer.register_forward_hook(lambda m, a, o, n=name: inputs.__setitem__(n, a[0].detach())))
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    rows = []
    for name, inp in inputs.items():
        layer = model.get_submodule(name)
        q = to_bnb(nn.Sequential(layer), fmt)
        with torch.inference_mode():
            ref, out = layer(inp), q(inp)
        err = float((out - ref).norm() / (ref.norm() + 1e-12))
        rows.append({"name": name, "op": "Linear", "error": err})
    return sorted(rows, key=lambda r: r["error"], reverse=True)


def save_bnb(model: nn.Module, path: str) -> None:
    """Pickle the whole quantized module (bitsandbytes parameters keep their quantization state)."""
    torch.save(model.cpu() if not any(p.is_cuda for p in model.parameters()) else model, path)


def load_bnb(path: str, device: str = "cpu") -> nn.Module:
    """Load a model written by :func:`save_bnb` (needs bitsandbytes and mlcost_pl importable; trusted files only)."""
    _import_bnb()
    return torch.load(path, map_location=device, weights_only=False).eval()
