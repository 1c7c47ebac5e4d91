"""The torchrun / torch.distributed.elastic environment as numbers Lightning needs: nodes, devices, accumulation.

Pure Python: no torch, no Lightning. torchrun sets ``WORLD_SIZE`` (all processes), ``LOCAL_WORLD_SIZE`` (processes on
this node) and ``GROUP_WORLD_SIZE`` (agents = nodes) in every worker, anew for every elastic restart; Lightning's
``TorchElasticEnvironment`` refuses a ``num_nodes x devices`` that differs from ``WORLD_SIZE``, so a fixed
``num_nodes`` makes every restart at another size fail. Reading them at config-resolution time (the
``mlcost_num_nodes`` / ``mlcost_devices`` / ``mlcost_accumulation`` resolvers) gives each restart its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _int_env(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key)
    if value in (None, ""):
        return None
    try:
        out = int(value)
    except ValueError:
        raise ValueError(f"environment variable {key}={value!r} is not an integer (set by torchrun/SLURM)") from None
    if out < 1:
        raise ValueError(f"environment variable {key}={value!r} must be >= 1")
    return out


@dataclass(frozen=True)
class ElasticTopology:
    """How many processes and nodes this (re)start of the job has.

    Attributes:
        world_size: processes in the job (1 outside a launcher).
        local_world_size: processes on this node.
        num_nodes: ``world_size // local_world_size``.
        restart_count: torchrun's ``TORCHELASTIC_RESTART_COUNT`` (0 on the first start or outside torchrun).
        elastic: whether torchrun launched this process.

    Example:
        >>> t = ElasticTopology.from_env({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "j"})
        >>> (t.num_nodes, t.local_world_size, t.elastic)
        (2, 4, True)
        >>> ElasticTopology.from_env({}).num_nodes
        1
    """

    world_size: int = 1
    local_world_size: int = 1
    num_nodes: int = 1
    restart_count: int = 0
    elastic: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ElasticTopology:
        """Read torchrun's variables (``os.environ`` by default); SLURM's ``SLURM_NTASKS``/``SLURM_NTASKS_PER_NODE`` too.

        Raises:
            ValueError: the variables are not positive integers, or ``WORLD_SIZE`` is not a multiple of
                ``LOCAL_WORLD_SIZE`` (names them).
        """
        env = os.environ if env is None else env
        world = _int_env(env, "WORLD_SIZE")
        local = _int_env(env, "LOCAL_WORLD_SIZE")
        if world is None and env.get("SLURM_NTASKS"):  # srun / submitit: one task per process
            world = _int_env(env, "SLURM_NTASKS")
            per_node = (env.get("SLURM_NTASKS_PER_NODE") or "").split("(")[0]
            local = int(per_node) if per_node.isdigit() else None
            if local is None and (nodes := _int_env(env, "SLURM_NNODES")):
                local = max(1, (world or 1) // nodes)
        world = world or 1
        local = local or world
        if world % local:
            raise ValueError(f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local}: every node must run the same number of processes")
        return cls(
            world_size=world,
            local_world_size=local,
            num_nodes=world // local,
            restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT") or 0),
            elastic="TORCHELASTIC_RUN_ID" in env,
        )


def accumulation_for(global_batch_size: int | None, batch_size: int, world_size: int) -> int:
    """Gradient-accumulation steps that keep ``batch_size x accumulation x world_size == global_batch_size``.

    ``None`` keeps accumulation at 1 (the global batch then grows and shrinks with the world).

    Raises:
        ValueError: ``global_batch_size`` is not a positive multiple of ``batch_size x world_size`` (names both and the
            world sizes it would work with).

    Example:
        >>> accumulation_for(256, 64, 4), accumulation_for(256, 64, 2), accumulation_for(256, 64, 1)
        (1, 2, 4)
    """
    if global_batch_size is None:
        return 1
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int) or global_batch_size < 1:
        raise ValueError(f"global_batch_size must be a positive integer or null, got {global_batch_size!r}")
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size and world size must be >= 1, got {batch_size} and {world_size}")
    per_step = batch_size * world_size
    if global_batch_size % per_step:
        fits = [w for w in range(1, global_batch_size // batch_size + 1) if global_batch_size % (batch_size * w) == 0]
        raise ValueError(
            f"global_batch_size={global_batch_size} is not a multiple of data.batch_size x world size = {batch_size} x {world_size}; "
            f"with this batch size it works on world sizes {fits}"
        )
    return global_batch_size // per_step


def num_nodes_resolver() -> int:
    """``${mlcost_num_nodes:}``: nodes of this (re)start, ``WORLD_SIZE // LOCAL_WORLD_SIZE`` (1 outside a launcher)."""
    return ElasticTopology.from_env().num_nodes


def devices_resolver(default: str | int = "auto") -> str | int:
    """``${mlcost_devices:auto}``: processes per node under a launcher (``LOCAL_WORLD_SIZE``), else ``default``."""
    topo = ElasticTopology.from_env()
    return topo.local_world_size if topo.world_size > 1 or topo.elastic else default


def accumulation_resolver(batch_size: int, global_batch_size: int | None = None) -> int:
    """``${mlcost_accumulation:${data.batch_size},${oc.select:global_batch_size,null}}`` for this (re)start's world."""
    return accumulation_for(global_batch_size, int(batch_size), ElasticTopology.from_env().world_size)
