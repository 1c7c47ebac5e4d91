"""CompressedDDPStrategy: Lightning's DDPStrategy with a gradient-compression hook chosen by name, on GPU and CPU."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from mlcost_pl.distributed.comm_hooks import comm_hook as make_comm_hook
from mlcost_pl.distributed.launcher import lightning_cluster_environment

GLOO_POWERSGD_BUCKET_MB = 1024


class CompressedDDPStrategy(DDPStrategy):
    """DDP whose gradient all-reduce is compressed: ``comm_hook="bf16"``, ``"fp16"`` or ``"powersgd"`` (or ``"none"``).

    Lightning's ``DDPStrategy(ddp_comm_hook=...)`` registers a hook only on CUDA; this registers it on every device, so
    the same option works on gloo/CPU (and is measured there by ``bench/comm_hooks.py``). Everything else is
    Lightning's DDP: elastic environments (torchrun), SLURM, ``find_unused_parameters`` and the rest pass through.

    Args:
        comm_hook: ``none``, ``fp16``, ``bf16`` or ``powersgd`` (see :mod:`mlcost_pl.distributed.comm_hooks`).
        powersgd_rank: PowerSGD's matrix approximation rank.
        powersgd_start_iter: plain all-reduce steps before PowerSGD compresses.
        slurm_auto_requeue: in a SLURM job, whether Lightning's ``SLURMEnvironment`` requeues from its own SIGUSR1
            handler. Off by default: PreemptionHandler saves on the notice and the launcher requeues
            (:func:`mlcost_pl.distributed.launcher.requeue_on_preemption`, or submitit).
        **kwargs: passed to ``DDPStrategy`` (``process_group_backend``, ``timeout``, ``cluster_environment`` ...).

    Raises:
        ValueError: an unknown ``comm_hook`` or bad PowerSGD arguments (names the argument).

    Example:
        >>> from mlcost_pl.distributed import CompressedDDPStrategy
        >>> CompressedDDPStrategy(comm_hook="bf16").comm_hook
        'bf16'
        >>> # L.Trainer(strategy=CompressedDDPStrategy(comm_hook="powersgd", powersgd_rank=2), num_nodes=2, devices=8)
    """

    def __init__(self, comm_hook: str = "none", powersgd_rank: int = 2, powersgd_start_iter: int = 100,
                 slurm_auto_requeue: bool = False, **kwargs: Any) -> None:
        make_comm_hook(comm_hook, powersgd_rank, powersgd_start_iter)  # validate now; the state is built after the group exists
        if kwargs.get("cluster_environment") is None:
            kwargs["cluster_environment"] = lightning_cluster_environment(slurm_auto_requeue)
        super().__init__(**kwargs)
        self.comm_hook = comm_hook
        self.powersgd_rank = powersgd_rank
        self.powersgd_start_iter = powersgd_start_iter

    @override
    def configure_ddp(self) -> None:
        if self.comm_hook == "powersgd" and torch.distributed.get_backend() == "gloo" and "bucket_cap_mb" not in self._ddp_kwargs:
            # gloo runs collectives on several threads, so PowerSGD's chained all-reduces of two buckets can be issued
            # in a different order on each rank (a collective mismatch). One bucket keeps them in order.
            self._ddp_kwargs["bucket_cap_mb"] = GLOO_POWERSGD_BUCKET_MB
            rank_zero_info(f"CompressedDDPStrategy: PowerSGD on gloo: one {GLOO_POWERSGD_BUCKET_MB} MB gradient bucket (set bucket_cap_mb to override)")
        super().configure_ddp()

    @override
    def _register_ddp_hooks(self) -> None:
        if self.comm_hook == "none":
            return
        state, hook = make_comm_hook(self.comm_hook, self.powersgd_rank, self.powersgd_start_iter)
        self.model.register_comm_hook(state, hook)  # type: ignore[union-attr]
        rank_zero_info(f"CompressedDDPStrategy: gradient all-reduce with comm_hook={self.comm_hook}")
