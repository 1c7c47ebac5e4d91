"""PreemptionHandler: turn a preemption notice into an emergency checkpoint agreed by all ranks, then exit 75."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from mlcost_pl.callbacks.spot_checkpoint import find_spot_checkpoint
from mlcost_pl.preemption.agreement import agreement_for, at_optimizer_boundary, poll
from mlcost_pl.preemption.restart import PREEMPTED_EXIT_CODE, PreemptedExit
from mlcost_pl.preemption.sampler import ResumableSampler, restores_itself, unsupported_reason, wrap_dataloader
from mlcost_pl.preemption.signals import DEFAULT_SIGNALS, SignalNotice
from mlcost_pl.preemption.watchers import WATCHERS, NoticeWatcher, make_watcher
from mlcost_pl.utils.checks import check_bool, check_int, check_number
from mlcost_pl.utils.rng import restore_rng_states

_LIGHTNING_NOT_RESUMABLE = "You're resuming from a checkpoint that ended before the epoch ended"


class PreemptionHandler(Callback):
    """Emergency checkpoint on a preemption notice, agreed by all ranks, then exit with ``PREEMPTED_EXIT_CODE`` (75).

    Notices: the configured signals (SIGTERM and SIGUSR1 by default: Kubernetes/GCP send SIGTERM, SLURM the signal of
    ``--signal``) and, optionally, cloud metadata watchers polled from a background thread (``aws``: IMDSv2
    ``spot/instance-action``; ``gcp``: ``instance/preempted``; ``azure``: Scheduled Events ``Preempt``). On a notice,
    the current optimizer step (the whole gradient-accumulation window) finishes, every ``check_every_n_steps`` steps
    the ranks reduce a notice flag (one tiny all-reduce, shared with SpotCheckpoint's time trigger and CostMonitor's
    budget; in a single process the flag is read every step at no cost), and all ranks call
    ``SpotCheckpoint.save_now(trainer, reason="preemption")`` at the same step: a synchronous, verified checkpoint.
    Then ``PreemptedExit`` (a ``SystemExit`` with code 75, "preempted, restart me") leaves the process; run it under
    ``python -m mlcost_pl.supervise`` (or a cluster's restart policy) to resume.

    Exact mid-epoch resume: the train DataLoaders built on ``RandomSampler``, ``SequentialSampler`` or
    ``DistributedSampler`` (all bundled DataModules) get a ``ResumableSampler`` whose epoch order depends only on
    ``(seed, epoch)``; after a mid-epoch resume it skips the indices already consumed (without loading them), so the
    model sees exactly the batches of an uninterrupted run. The RNG states (torch, CUDA, Python, NumPy), saved once per
    checkpoint by SpotCheckpoint, are re-applied at the resumed step. Stateful loaders (litdata's
    ``StreamingDataLoader``: ``state_dict``/``load_state_dict``) resume at the exact sample from the state Lightning
    stores in every checkpoint, the emergency one included. Other loaders restart the interrupted epoch from its
    beginning, with one warning.

    Needs a ``SpotCheckpoint`` (any callback with ``save_now``) on the same Trainer.

    Args:
        signals: signal names or numbers that mean "preemption notice".
        watchers: clouds to poll: any of ``"aws"``, ``"gcp"``, ``"azure"``.
        metadata_url: base URL of the metadata server for the watchers (``None``: each cloud's own).
        poll_seconds: seconds between watcher polls.
        check_every_n_steps: with several ranks, reduce the notice flag every this many optimizer steps.
        grace_seconds: the warning the platform gives (AWS 120, GCP/Kubernetes/Azure ~30); the emergency save time is
            logged against it, with a warning when it used more than half.
        exact_resume: install ``ResumableSampler`` in the train loaders and restore RNG states.
        exit_on_notice: raise ``PreemptedExit`` after the emergency checkpoint (``False``: stop the fit cleanly
            with ``trainer.should_stop`` instead, for notebooks).

    Raises:
        ValueError: an unknown signal or cloud, a non-positive interval or step count; at fit start, no
            ``SpotCheckpoint`` on the Trainer.

    Logged metrics (at the emergency save):

    ==============================  ==============================================================
    key                             meaning
    ==============================  ==============================================================
    ``preemption/save_s``           seconds the emergency checkpoint took
    ``preemption/notice_to_save_s`` seconds from the notice (on this rank) to a committed checkpoint
    ``preemption/grace_used``       ``notice_to_save_s / grace_seconds``
    ``preemption/count``            preemptions handled so far in this run (kept across resumes)
    ==============================  ==============================================================

    Example:
        >>> from mlcost_pl.callbacks import PreemptionHandler, SpotCheckpoint  # doctest: +SKIP
        >>> trainer = L.Trainer(callbacks=[SpotCheckpoint("s3://bucket/run1"), PreemptionHandler(watchers=["aws"])])  # doctest: +SKIP
    """

    def __init__(
        self,
        signals: Sequence[str | int] = DEFAULT_SIGNALS,
        watchers: Sequence[str] = (),
        metadata_url: str | None = None,
        poll_seconds: float = 5.0,
        check_every_n_steps: int = 10,
        grace_seconds: float = 30.0,
        exact_resume: bool = True,
        exit_on_notice: bool = True,
    ) -> None:
        if isinstance(watchers, str):
            watchers = [watchers]
        if isinstance(signals, (str, int)):
            signals = [signals]
        unknown = [w for w in watchers if w not in WATCHERS]
        if unknown:
            raise ValueError(f"watchers: unknown cloud(s) {unknown}; choose from {sorted(WATCHERS)}")
        check_number("poll_seconds", poll_seconds)
        check_int("check_every_n_steps", check_every_n_steps)
        check_number("grace_seconds", grace_seconds)
        check_bool("exact_resume", exact_resume)
        check_bool("exit_on_notice", exit_on_notice)
        if metadata_url is not None and (not isinstance(metadata_url, str) or not metadata_url.startswith(("http://", "https://"))):
            raise ValueError(f"metadata_url must be an http:// or https:// URL or None, got {metadata_url!r}")
        self.notice = SignalNotice(signals)
        self.watcher_names = list(watchers)
        self.metadata_url = metadata_url
        self.poll_seconds = poll_seconds
        self.check_every_n_steps = check_every_n_steps
        self.grace_seconds = grace_seconds
        self.exact_resume = exact_resume
        self.exit_on_notice = exit_on_notice
        self.preemptions = 0
        self.seed: int | None = None
        self.last_save_seconds: float | None = None
        self.last_checkpoint: str | None = None
        self._watchers: list[NoticeWatcher] = []
        self._spot: Any = None
        self._legacy_rng: dict[str, Any] | None = None  # checkpoints written before SpotCheckpoint held the one copy
        self._rng_to_restore: dict[str, Any] | None = None
        self._warned: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:  # picklable for ddp_spawn: running watcher threads stay behind
        state = self.__dict__.copy()
        state["_watchers"], state["_spot"] = [], None
        return state

    @property
    def state_key(self) -> str:
        return "PreemptionHandler"

    # ------------------------------------------------------------------ set-up and tear-down

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._spot = find_spot_checkpoint(trainer)
        if self._spot is None:
            raise ValueError(
                "callbacks: PreemptionHandler needs a SpotCheckpoint on the same Trainer to write the emergency "
                "checkpoint; add mlcost_pl.callbacks.SpotCheckpoint(dirpath=...) to the callbacks "
                "(Hydra: callbacks=spot or callbacks=default)"
            )
        if self.seed is None:  # not restored from a checkpoint: from the global seed (seed_everything), no RNG draw
            self.seed = int(torch.initial_seed() % (2**62))
        agreement_for(trainer).register("preemption", self.notice.is_set, every_n_steps=self.check_every_n_steps)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.notice.clear()
        if threading.current_thread() is threading.main_thread():
            self.notice.install()
        elif "thread" not in self._warned:
            self._warned.add("thread")
            rank_zero_warn("PreemptionHandler: training runs outside the main thread, so signals cannot be caught "
                           "here; only the cloud watchers (watchers=[...]) can deliver a notice")
        if trainer.local_rank == 0:  # one poller per machine; the flag reduction spreads it to every rank
            self._watchers = [make_watcher(n, self.notice.set, self.metadata_url, self.poll_seconds).start() for n in self.watcher_names]
        mid_epoch = self._prepare_loaders(trainer, resuming=True) if self.exact_resume else False
        rng = getattr(self._spot, "loaded_rng_states", None) or self._legacy_rng
        self._legacy_rng = None
        # Re-applied now (sanity-check validation and loader set-up drew from the RNGs since the restore) or, for
        # stateful loaders, at the first resumed batch.
        self._rng_to_restore = rng if self.exact_resume else None
        combined = getattr(trainer.fit_loop, "_combined_loader", None)
        if mid_epoch and combined is not None and any(restores_itself(dl) for dl in combined.flattened):
            # A stateful loader (litdata) starts its iterator, one RNG draw for its base seed, at its first batch:
            # restore the RNG state after that, at the first resumed batch (on_train_batch_start).
            return
        if self._rng_to_restore is not None:
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
            if not mid_epoch and getattr(trainer.fit_loop, "_data_fetcher", None) is not None:
                # At an epoch boundary the uninterrupted run creates the next epoch's iterator after this state
                # (one RNG draw for its base seed): do the same, after the restore.
                iter(trainer.fit_loop._data_fetcher)

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # deferred by on_train_start (stateful loaders)
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.exact_resume:  # loaders reloaded by reload_dataloaders_every_n_epochs
            self._prepare_loaders(trainer, resuming=False)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._shutdown()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        for w in self._watchers:
            w.stop(join_timeout=0.5)
        self._watchers = []
        self.notice.restore()

    # ------------------------------------------------------------------ exact mid-epoch resume

    def _prepare_loaders(self, trainer: L.Trainer, resuming: bool) -> bool:
        """Wrap the train loaders; on a mid-epoch resume, skip (or rewind); return whether it resumed mid-epoch."""
        combined = getattr(trainer.fit_loop, "_combined_loader", None)
        if combined is None:
            return False
        assert self.seed is not None
        epoch_loop = trainer.fit_loop.epoch_loop
        done = epoch_loop.batch_progress.current.processed
        num_batches = trainer.num_training_batches
        mid_epoch = resuming and 0 < done < num_batches
        reasons, wrapped, workers = [], [], False
        for dl in combined.flattened:
            if restores_itself(dl):  # e.g. litdata's StreamingDataLoader: its state_dict is in the checkpoint
                continue
            reason = unsupported_reason(dl)
            if reason is not None:
                reasons.append(f"{type(dl).__name__}: {reason}")
                continue
            fresh = not isinstance(dl.batch_sampler.sampler, ResumableSampler)
            sampler = wrap_dataloader(dl, self.seed)
            sampler.set_epoch(trainer.current_epoch)
            wrapped.append((dl, sampler))
            workers |= fresh and dl.num_workers > 0
        if reasons and "unsupported" not in self._warned:
            self._warned.add("unsupported")
            rank_zero_warn(
                f"PreemptionHandler: exact mid-epoch resume is not possible for the train loader ({'; '.join(reasons)}). "
                "After a mid-epoch preemption its epoch restarts from the beginning. Use a DataLoader with a "
                "RandomSampler, SequentialSampler or DistributedSampler for exact resume."
            )
        if mid_epoch and not reasons:
            for dl, sampler in wrapped:
                sampler.skip_next(trainer.current_epoch, done * dl.batch_sampler.batch_size)
            warnings.filterwarnings("ignore", message=_LIGHTNING_NOT_RESUMABLE)
            rank_zero_info(f"PreemptionHandler: resuming epoch {trainer.current_epoch} at batch {done} exactly (skipping {done} consumed batches)")
        elif mid_epoch:
            self._rewind_epoch(trainer)
        if workers or (mid_epoch and reasons):
            # Worker iterators pulled indices from the old sampler already (or the epoch was rewound): start over.
            iter(trainer.fit_loop._data_fetcher)
        return mid_epoch

    @staticmethod
    def _rewind_epoch(trainer: L.Trainer) -> None:
        """Make Lightning rerun the interrupted epoch from its first batch (for loaders we cannot skip in)."""
        epoch_loop = trainer.fit_loop.epoch_loop
        current = epoch_loop.batch_progress.current
        # epoch_loop.reset() will add one completed batch when the checkpoint was written on_train_batch_end
        current.completed = -1 if epoch_loop.restarted_on_train_batch_end else 0
        current.ready = current.started = current.processed = 0
        warnings.filterwarnings("ignore", message=_LIGHTNING_NOT_RESUMABLE)

    # ------------------------------------------------------------------ the notice

    def _agreed(self, trainer: L.Trainer) -> bool:
        """Whether to save now: at an optimizer boundary (never mid accumulation window), agreed by every rank.

        One process reads the flag at every boundary; several share one all-reduce every ``check_every_n_steps``
        steps with SpotCheckpoint's and CostMonitor's time and budget flags (see ``mlcost_pl.preemption.agreement``).
        """
        if trainer.world_size == 1:
            return self.notice.is_set() and at_optimizer_boundary(trainer)
        agreed = poll(trainer)
        return bool(agreed and agreed.get("preemption"))

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._agreed(trainer):
            return
        noticed_at = self.notice.received_at or time.monotonic()
        reason = self.notice.reason or "a notice on another rank"
        self.preemptions += 1
        start = time.monotonic()
        self.last_checkpoint = self._spot.save_now(trainer, reason="preemption")
        end = time.monotonic()
        self.last_save_seconds = end - start
        notice_to_save = end - noticed_at
        metrics = {
            "preemption/save_s": self.last_save_seconds,
            "preemption/notice_to_save_s": notice_to_save,
            "preemption/grace_used": notice_to_save / self.grace_seconds,
            "preemption/count": float(self.preemptions),
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        msg = (f"PreemptionHandler: {reason}; emergency checkpoint at step {trainer.global_step} took "
               f"{self.last_save_seconds:.2f} s, {notice_to_save:.2f} s after the notice = "
               f"{100 * notice_to_save / self.grace_seconds:.0f}% of the {self.grace_seconds:.0f} s grace; {self.last_checkpoint}")
        if notice_to_save > self.grace_seconds / 2:
            rank_zero_warn(msg + " (more than half the grace: checkpoint less state or use check_every_n_steps=1)")
        else:
            rank_zero_info(msg)
        self._shutdown()
        if self.exit_on_notice:
            raise PreemptedExit(f"preempted at step {trainer.global_step}: {reason}")
        trainer.should_stop = True

    # ------------------------------------------------------------------ resume state

    @override
    def state_dict(self) -> dict[str, Any]:
        # The RNG states travel once per checkpoint, in SpotCheckpoint's state; this callback restores them in time.
        return {"preemptions": self.preemptions, "seed": self.seed, "exit_code": PREEMPTED_EXIT_CODE}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.preemptions = int(state_dict.get("preemptions", 0))
        self.seed = state_dict.get("seed", self.seed)
        self._legacy_rng = state_dict.get("rng")
