"""The one reader of ``/proc/cpuinfo``: CPU feature flags and model name, parsed once per process."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about the CPU.

    Attributes:
        flags: feature flags (x86 ``flags``, Arm ``Features``), lower case.
        name: the ``model name`` line, or the machine type when there is none.
    """

    flags: frozenset[str]
    name: str


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo``.

    Example:
        >>> info = parse_cpuinfo("model name : Xeon\\nflags : fpu AVX2 avx512_vnni\\n")
        >>> sorted(info.flags), info.name
        (['avx2', 'avx512_vnni', 'fpu'], 'Xeon')
    """
    flags: set[str] = set()
    name = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(v.lower() for v in value.split())
        elif key == "model name" and not name:
            name = value.strip()
    return CpuInfo(frozenset(flags), name or platform.machine())


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's :class:`CpuInfo` (empty flags where ``/proc/cpuinfo`` is unreadable, e.g. macOS, Windows)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return CpuInfo(frozenset(), platform.processor() or platform.machine())
