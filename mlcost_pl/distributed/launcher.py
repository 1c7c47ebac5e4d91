"""Adapters between launchers (submitit / SLURM, torchrun) and Lightning: the job's world, requeue on preemption.

* :func:`export_launcher_env`: inside a submitit job (``SUBMITIT_EXECUTOR`` set, local or SLURM), export submitit's
  ``TorchDistributedEnvironment`` (``MASTER_ADDR``/``PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``) so Lightning and the ``mlcost_num_nodes`` resolver see the job's processes.
* :func:`lightning_cluster_environment`: under SLURM, Lightning's ``SLURMEnvironment`` with ``auto_requeue=False``:
  Lightning's own requeue runs ``scontrol requeue`` from inside its SIGUSR1 handler (with open hang reports); here the
  PreemptionHandler saves and :func:`requeue_on_preemption` requeues after the checkpoint is committed.
* :func:`requeue_on_preemption`: when the wrapped call exits with ``PREEMPTED_EXIT_CODE`` (75) in a SLURM job, global
  rank 0 runs ``scontrol requeue $SLURM_JOB_ID`` (what submitit's own requeue runs); the requeued job re-runs the same
  submission, which resumes from the newest checkpoint.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mlcost_pl.preemption.restart import PREEMPTED_EXIT_CODE


def under_submitit(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs inside a submitit job (local or SLURM executor)."""
    env = os.environ if env is None else env
    return bool(env.get("SUBMITIT_EXECUTOR"))


def export_launcher_env() -> bool:
    """Inside a submitit job, export the torch.distributed variables of the job's world; ``False`` elsewhere.

    Raises:
        ImportError: submitit is not installed (``pip install submitit``).
    """
    if not under_submitit() or "TORCHELASTIC_RUN_ID" in os.environ:
        return False
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError as err:  # pragma: no cover - submitit is a dependency
        raise ImportError("running under submitit needs submitit: pip install submitit") from err
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def lightning_cluster_environment(slurm_auto_requeue: bool = False) -> Any | None:
    """``SLURMEnvironment(auto_requeue=slurm_auto_requeue)`` in a SLURM job, else ``None`` (Lightning detects the rest)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        return SLURMEnvironment(auto_requeue=slurm_auto_requeue)
    return None


def slurm_requeue_command(env: Mapping[str, str] | None = None) -> list[str] | None:
    """``["scontrol", "requeue", <job id>]`` on global rank 0 of a SLURM job, else ``None``.

    Example:
        >>> slurm_requeue_command({"SLURM_JOB_ID": "42", "SLURM_PROCID": "0"})
        ['scontrol', 'requeue', '42']
        >>> slurm_requeue_command({"SLURM_JOB_ID": "42", "SLURM_PROCID": "1"}) is None
        True
    """
    env = os.environ if env is None else env
    job = env.get("SLURM_ARRAY_JOB_ID") and f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}".rstrip("_")
    job = job or env.get("SLURM_JOB_ID")
    if not job or env.get("SLURM_PROCID", env.get("RANK", "0")) != "0":
        return None
    return ["scontrol", "requeue", job]


@contextmanager
def requeue_on_preemption(run: Callable[..., Any] = subprocess.run, log: Callable[[str], None] = print) -> Iterator[None]:
    """Requeue this SLURM job (rank 0) when the body exits with ``PREEMPTED_EXIT_CODE``; re-raise the exit either way."""
    try:
        yield
    except SystemExit as exit_:
        if exit_.code == PREEMPTED_EXIT_CODE:
            cmd = slurm_requeue_command()
            if cmd is not None:
                result = run(cmd, check=False, timeout=60)
                log(f"preempted after the emergency checkpoint: {' '.join(cmd)} -> exit {getattr(result, 'returncode', '?')}")
        raise
