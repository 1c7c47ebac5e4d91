"""Automatic precision: pick the fastest safe Lightning precision for the hardware, and say why.

``resolve_precision("auto")`` is a pure function of :class:`DeviceCaps` (pass one to test or to plan for another
machine); :func:`detect_caps` reads the current machine. Also exposed to Hydra as the ``mlcost_precision`` resolver,
and ``trainer.precision=auto`` is resolved by ``recipes.train``.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass

from mlcost_pl.errors import UserInputError
from mlcost_pl.utils.cpu import cpu_info

log = logging.getLogger(__name__)

ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags with native bf16 arithmetic
ARM_BF16_FLAGS = ("bf16",)  # aarch64 /proc/cpuinfo "Features"


@dataclass(frozen=True)
class DeviceCaps:
    """What the chosen device can do (inject one in tests instead of patching torch).

    Attributes:
        accelerator: ``"cuda"`` or ``"cpu"``: the device training will run on.
        cuda_name: GPU name (``""`` on CPU).
        cuda_capability: CUDA compute capability, e.g. ``(8, 0)``; ``None`` on CPU.
        cuda_bf16: the GPU runs bf16 natively (Ampere, sm_80, and newer).
        cpu_bf16: the CPU has native bf16 instructions (AVX512-BF16 / AMX-BF16 on x86, BF16 on Arm).
        cpu_name: CPU description for messages.
    """

    accelerator: str
    cuda_name: str = ""
    cuda_capability: tuple[int, int] | None = None
    cuda_bf16: bool = False
    cpu_bf16: bool = False
    cpu_name: str = ""


def detect_caps(accelerator: str = "auto") -> DeviceCaps:
    """The capabilities of this machine's device for ``accelerator`` (``auto``: CUDA when available).

    Raises:
        ValueError: ``accelerator`` is not one of ``auto``, ``cpu``, ``gpu``, ``cuda``.
    """
    import torch

    if accelerator not in ACCELERATORS:
        raise UserInputError(f"accelerator must be one of {ACCELERATORS} for precision=auto, got {accelerator!r}")
    info = cpu_info()
    flags, cpu_name = info.flags, info.name
    cpu_bf16 = any(f in flags for f in CPU_BF16_FLAGS) or (
        platform.machine().lower() in ("aarch64", "arm64") and any(f in flags for f in ARM_BF16_FLAGS)
    )
    use_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if use_cuda and torch.cuda.is_available():
        cap = torch.cuda.get_device_capability()
        return DeviceCaps("cuda", torch.cuda.get_device_name(), cap, cap >= (8, 0), cpu_bf16, cpu_name)
    return DeviceCaps("cpu" if not use_cuda else "cuda", cpu_bf16=cpu_bf16, cpu_name=cpu_name)


def resolve_precision(requested: str = "auto", caps: DeviceCaps | None = None, accelerator: str = "auto") -> tuple[str, str]:
    """``(precision, reason)``: ``requested`` unchanged unless it is ``"auto"``, which picks

    * ``bf16-mixed`` on CUDA GPUs with native bf16 (compute capability >= 8.0),
    * ``16-mixed`` on older CUDA GPUs (fp16 autocast with loss scaling),
    * ``bf16-mixed`` on CPUs with native bf16 instructions,
    * ``32-true`` otherwise (bf16 emulated on a CPU without it is slower than fp32).

    Args:
        requested: a Lightning precision or ``"auto"``.
        caps: the device; ``None`` detects this machine's for ``accelerator``.
        accelerator: used only when ``caps`` is None.

    Example:
        >>> resolve_precision("auto", DeviceCaps("cuda", "NVIDIA A100", (8, 0), cuda_bf16=True))[0]
        'bf16-mixed'
        >>> resolve_precision("auto", DeviceCaps("cuda", "Tesla V100", (7, 0)))[0]
        '16-mixed'
        >>> resolve_precision("auto", DeviceCaps("cpu", cpu_bf16=False))[0]
        '32-true'
    """
    if str(requested) != "auto":
        return requested, "set explicitly"
    caps = caps or detect_caps(accelerator)
    if caps.accelerator == "cuda":
        if caps.cuda_capability is None:
            return "32-true", "a CUDA accelerator was asked for but no CUDA device is visible"
        sm = f"sm_{caps.cuda_capability[0]}{caps.cuda_capability[1]}"
        if caps.cuda_bf16:
            return "bf16-mixed", f"{caps.cuda_name} ({sm}) runs bf16 natively"
        return "16-mixed", f"{caps.cuda_name} ({sm}) has no native bf16: fp16 autocast with loss scaling"
    if caps.cpu_bf16:
        return "bf16-mixed", f"CPU {caps.cpu_name} has native bf16 instructions"
    return "32-true", f"CPU {caps.cpu_name or 'unknown'} has no native bf16 (AVX512-BF16/AMX/Arm BF16): bf16 would be emulated"


def auto_precision(accelerator: str = "auto") -> str:
    """The precision for this machine, logging the choice and the reason: ``L.Trainer(precision=auto_precision())``."""
    precision, reason = resolve_precision("auto", accelerator=accelerator)
    log.info("precision=auto -> %s (%s)", precision, reason)
    return precision


def precision_resolver(requested: str = "auto", accelerator: str = "auto") -> str:
    """The ``${mlcost_precision:<requested>,<accelerator>}`` OmegaConf resolver."""
    precision, reason = resolve_precision(str(requested), accelerator=str(accelerator))
    if str(requested) == "auto":
        log.info("precision=auto -> %s (%s)", precision, reason)
    return precision
