"""SpotCheckpoint: atomic, verified, optionally async checkpoints to any fsspec URL, with automatic resume."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from typing_extensions import override

from mlcost_pl.checkpoint.async_writer import AsyncWriter, BufferPool, call_with_retries, snapshot_to_cpu
from mlcost_pl.checkpoint.interval import young_daly_interval
from mlcost_pl.checkpoint.manifest import (
    CKPT_FILE,
    apply_retention,
    commit_checkpoint,
    iter_valid,
    load_bytes,
    new_checkpoint_name,
    read_progress,
    serialize,
    write_progress,
)
from mlcost_pl.checkpoint.states import claim_callback_states
from mlcost_pl.checkpoint.storage import CheckpointStorage
from mlcost_pl.preemption.agreement import agreement_for, at_optimizer_boundary, poll
from mlcost_pl.utils.checks import check_bool, check_choice, check_int, check_number
from mlcost_pl.utils.rng import capture_rng_states, restore_rng_states

DEFAULT_MTBF_SECONDS = 6 * 3600.0


@dataclass
class _SaveResult:
    url: str
    global_step: int
    bytes_written: int
    write_seconds: float
    deleted: list[str]


class SpotCheckpoint(Callback):
    """Checkpoints a spot user can trust: atomic, verified, optionally async, to any fsspec URL, with automatic resume.

    Each checkpoint is a folder ``step-<global step>-<unix ms>/`` holding ``checkpoint.ckpt`` (Lightning's full
    checkpoint dict plus RNG states) and ``MANIFEST.json`` (sizes, sha256, step, time, versions), written last as the
    commit marker. Local files are written to a temporary name in the target folder, fsynced and renamed, and the
    folder is fsynced. ``keep_last`` prunes older checkpoints only after a newer
    one is committed. With the callback on the Trainer, ``trainer.fit(model)`` without ``ckpt_path`` resumes from the
    newest checkpoint that verifies (skipping, with a warning naming it, any newer one that does not); an explicit
    ``ckpt_path`` still wins.

    Args:
        dirpath: local path or fsspec URL (``file://``, ``memory://``, ``s3://``, ``gs://`` ...) of the checkpoint folder.
        every_n_steps: save when ``global_step`` is a multiple of this.
        every_seconds: save when this many wall seconds passed since the last save; ``"auto"`` picks the interval
            from the measured save cost and ``mtbf_seconds`` (Young/Daly, ``sqrt(2 x save_s x mtbf_s)``), re-estimated
            after each save. May be combined with ``every_n_steps``. Saves land only where an optimizer step just ran
            (never inside a gradient-accumulation window). With several ranks, ``every_n_steps`` is decided by each
            rank alone and time triggers are agreed in the shared flag all-reduce every ``check_every_n_steps``
            steps (PreemptionHandler's setting, 10 by default): no collective per step.
        keep_last: committed checkpoints to keep (older ones are deleted after a newer commit).
        async_save: snapshot the state to CPU memory and write it on a background thread; the loop blocks only for
            the snapshot. At most one save is in flight; a periodic trigger that finds one in flight is skipped
            (``on_busy="skip"``) or waits (``on_busy="wait"``), with a message either way.
        save_on_fit_end: save when training ends.
        mtbf_seconds: mean time between preemptions for ``every_seconds="auto"`` (default 6 h).
        resume: resume automatically from the newest valid checkpoint when ``fit`` gets no ``ckpt_path``.
        storage_options: fsspec options for ``dirpath`` (credentials, ``client_kwargs={"endpoint_url": ...}``).
        progress_every_seconds: how often to record the newest executed step (``progress.json``), used to count
            steps re-done after a resume.
        retries: retries (with exponential backoff from ``backoff_s``) of a failed write before it is raised.
        backoff_s: the first retry's wait in seconds.
        on_busy: ``"skip"`` or ``"wait"``: what a periodic async trigger does while a save is in flight.

    Raises:
        ValueError: a non-positive interval, ``keep_last < 1``, a bad ``every_seconds``/``on_busy`` (names the argument).
        CheckpointDirError: at fit start, when ``dirpath`` cannot be reached or written (one line: URL and cause).
        CheckpointWriteError: a background write failed after its retries (raised on the training thread).

    Logged metrics (to the Trainer's loggers, at the step of the save):

    ==============================  ==========================================================================
    ``checkpoint/blocked_s``        seconds the training loop was blocked by this checkpoint
    ``checkpoint/written_bytes``    bytes written for this checkpoint (data and manifest)
    ``checkpoint/write_s``          seconds to serialize, hash, write and commit it (background when async)
    ``checkpoint/committed_total``  checkpoints committed so far (kept across resumes)
    ``checkpoint/interval_s``       the chosen save interval (``every_seconds="auto"`` only)
    ==============================  ==========================================================================

    Example:
        >>> from mlcost_pl.callbacks import SpotCheckpoint
        >>> spot = SpotCheckpoint("memory://doc-run", every_n_steps=200, every_seconds=600, keep_last=3)
        >>> spot.dirpath
        'memory:///doc-run'
        >>> # trainer = L.Trainer(callbacks=[spot]); trainer.fit(model)   # re-running resumes automatically
    """

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int | None = None,
        every_seconds: float | str | None = None,
        keep_last: int = 3,
        async_save: bool = False,
        save_on_fit_end: bool = True,
        mtbf_seconds: float | None = None,
        resume: bool = True,
        storage_options: dict[str, Any] | None = None,
        progress_every_seconds: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        on_busy: str = "skip",
    ) -> None:
        check_int("every_n_steps", every_n_steps, allow_none=True)
        self._auto = isinstance(every_seconds, str)
        if self._auto and every_seconds != "auto":
            raise ValueError(f"every_seconds must be a positive number, 'auto' or None, got {every_seconds!r}")
        if not self._auto and every_seconds is not None:
            try:
                check_number("every_seconds", every_seconds)
            except ValueError:
                raise ValueError(f"every_seconds must be a positive number, 'auto' or None, got {every_seconds!r}") from None
        check_int("keep_last", keep_last)
        check_bool("async_save", async_save)
        check_bool("save_on_fit_end", save_on_fit_end)
        check_number("mtbf_seconds", mtbf_seconds, allow_none=True)
        check_bool("resume", resume)
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise ValueError(f"storage_options must be a mapping of fsspec options or None, got {storage_options!r}")
        check_number("progress_every_seconds", progress_every_seconds)
        check_int("retries", retries, minimum=0)
        check_number("backoff_s", backoff_s, strict=False)
        check_choice("on_busy", on_busy, ("skip", "wait"))
        storage_options = dict(storage_options) if storage_options is not None else None
        self._storage = CheckpointStorage(str(dirpath), storage_options)
        self.dirpath: str = self._storage.url
        self.every_n_steps = every_n_steps
        self.every_seconds = every_seconds
        self.keep_last = keep_last
        self.async_save = bool(async_save)
        self.save_on_fit_end = save_on_fit_end
        self.mtbf_seconds = float(mtbf_seconds) if mtbf_seconds is not None else DEFAULT_MTBF_SECONDS
        self.resume = resume
        self.progress_every_seconds = float(progress_every_seconds)
        self.on_busy = on_busy
        self._writer = AsyncWriter(retries=retries, backoff_s=backoff_s)
        self._writer.on_retry = self._on_retry
        self._pool = BufferPool()

        # Public, contract-stable state.
        self.last_save_seconds: float | None = None
        self.blocked_seconds_total: float = 0.0
        self.lost_steps_total: int = 0
        self.resumed_from: str | None = None
        self.checkpoints_committed: int = 0
        self.bytes_written_total: int = 0
        self.last_checkpoint: str | None = None

        # Per-fit bookkeeping.
        self._interval_s: float | None = None if self._auto else (float(every_seconds) if every_seconds else None)
        self._save_cost_s: float | None = None
        self._last_write_s: float = 0.0
        self._last_save_time = time.monotonic()
        self._last_saved_step: int | None = None
        self.loaded_rng_states: dict[str, Any] | None = None  # from the checkpoint this fit resumed from
        self._last_progress_time = 0.0
        self._progress: dict[str, Any] = {}
        self._restored_from: str | None = None
        self._orig_resume_start: Any = None
        self._active = True
        self._dumping = False

    # ------------------------------------------------------------------ pickling (ddp_spawn sends callbacks over)
    def __getstate__(self) -> dict[str, Any]:
        if self._writer.busy:
            self._writer.wait()
        state = dict(self.__dict__)
        state["_writer"] = (self._writer.retries, self._writer.backoff_s)
        state["_pool"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        retries, backoff_s = state.pop("_writer")
        self.__dict__.update(state)
        self._writer = AsyncWriter(retries=retries, backoff_s=backoff_s)
        self._writer.on_retry = self._on_retry
        self._pool = BufferPool()

    # ------------------------------------------------------------------ identity and state
    @property
    @override
    def state_key(self) -> str:
        # Not the folder: a run resumed from a moved or re-mounted folder must still find its state (and RNG).
        return "SpotCheckpoint"

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "blocked_seconds_total": self.blocked_seconds_total,
            "lost_steps_total": self.lost_steps_total,
            # A checkpoint that is loaded was committed, so it counts itself.
            "checkpoints_committed": self.checkpoints_committed + (1 if self._dumping else 0),
            "bytes_written_total": self.bytes_written_total,
            "save_cost_s": self._save_cost_s,
            # The one copy of the RNG states per checkpoint (PreemptionHandler re-applies it at the resumed step).
            "rng_states": capture_rng_states(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.blocked_seconds_total = float(state_dict.get("blocked_seconds_total", 0.0))
        self.lost_steps_total = int(state_dict.get("lost_steps_total", 0))
        self.checkpoints_committed = int(state_dict.get("checkpoints_committed", 0))
        self.bytes_written_total = int(state_dict.get("bytes_written_total", 0))
        self._save_cost_s = state_dict.get("save_cost_s", self._save_cost_s)
        rng = state_dict.get("rng_states")
        if rng:
            # Now, while Lightning restores: before the fit loop builds its first dataloader iterator.
            restore_rng_states(rng)
            self.loaded_rng_states = rng

    @staticmethod
    def _claim_states(trainer: pl.Trainer, checkpoint: Any) -> None:
        """Move callback states stored under older keys (instance, market or folder in them) to today's keys.

        Runs before Lightning matches states to callbacks, so Lightning's own warning ("Please add the following
        callbacks: [...]") then names only the states that no callback on this Trainer claims.
        """
        stored = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
        if not isinstance(stored, dict) or not stored:
            return
        renames, _ = claim_callback_states(stored, [(cb.state_key, type(cb).__qualname__) for cb in trainer.callbacks])
        for old, new in renames.items():
            stored[new] = stored.pop(old)

    # ------------------------------------------------------------------ fit start: check, resume
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != TrainerFn.FITTING.value:
            return
        self._active = not trainer.fast_dev_run
        if not self._active:
            rank_zero_info("SpotCheckpoint: off under fast_dev_run (no checkpoints written or resumed)")
            return
        error = None
        if trainer.is_global_zero:
            try:
                self._storage.check_writable()
                self._progress = read_progress(self._storage)
            except Exception as err:  # noqa: BLE001 - reported on every rank below
                error = err
        message = trainer.strategy.broadcast(str(error) if error else None)
        if error is not None:
            raise error
        if message:
            raise RuntimeError(message)
        self._restored_from = None
        self.resumed_from = None
        self.loaded_rng_states = None
        if self._interval_s is not None or self._auto:  # time-based triggers: ranks agree, at most every N steps
            agreement_for(trainer).register("spot_checkpoint", lambda: self._time_due() is not None)
        if self.resume:
            self._install_resume(trainer)

    def _install_resume(self, trainer: pl.Trainer) -> None:
        """Wrap this trainer's ``resume_start`` for this fit: with no ``ckpt_path``, load our newest valid checkpoint.

        Lightning picks ``ckpt_path`` before any hook runs, then calls ``_checkpoint_connector.resume_start(ckpt_path)``
        after the ``setup`` hooks. Substituting there keeps an explicit ``ckpt_path`` (or ``trainer.ckpt_path = ...``)
        winning and works for strategies that restore before or after ``strategy.setup``.
        """
        connector = trainer._checkpoint_connector
        self._uninstall_resume(trainer)
        original = connector.resume_start
        self._orig_resume_start = original

        def resume_start(checkpoint_path: Any = None, weights_only: Any = None) -> None:
            self._uninstall_resume(trainer)
            if checkpoint_path or trainer.state.fn != TrainerFn.FITTING:
                self._restored_from = str(checkpoint_path) if checkpoint_path else None
                original(checkpoint_path, weights_only=weights_only)
                self._claim_states(trainer, connector._loaded_checkpoint)
                return None
            loaded = self._load_newest_valid(trainer)
            if loaded is None:
                rank_zero_info(f"SpotCheckpoint: no committed checkpoint in {self.dirpath}; starting from scratch")
                return original(None, weights_only=weights_only)
            url, checkpoint = loaded
            from lightning.pytorch.utilities.migration.utils import _pl_migrate_checkpoint

            connector._ckpt_path = url
            connector._loaded_checkpoint = _pl_migrate_checkpoint(checkpoint, url)
            self._claim_states(trainer, connector._loaded_checkpoint)
            self._restored_from = url
            self.resumed_from = url
            return None

        connector.resume_start = resume_start

    def _uninstall_resume(self, trainer: pl.Trainer) -> None:
        connector = trainer._checkpoint_connector
        if "resume_start" in vars(connector):
            del connector.resume_start
        self._orig_resume_start = None

    def _load_newest_valid(self, trainer: pl.Trainer) -> tuple[str, dict[str, Any]] | None:
        """Rank zero picks the newest checkpoint that verifies and loads; every rank loads that one."""
        chosen: str | None = None
        checkpoint = None
        if trainer.is_global_zero:
            for ref, data in iter_valid(self._storage, on_skip=rank_zero_warn):
                try:
                    checkpoint = load_bytes(data)
                except Exception as err:  # noqa: BLE001 - a checkpoint that does not load is skipped like a corrupt one
                    rank_zero_warn(f"skipping checkpoint {ref.url}: verifies but does not load: {err}")
                    continue
                chosen = ref.name
                rank_zero_info(f"SpotCheckpoint: resuming from {ref.file_url} (global step {ref.global_step})")
                break
        chosen = trainer.strategy.broadcast(chosen)
        if chosen is None:
            return None
        if checkpoint is None:  # other ranks
            from mlcost_pl.checkpoint.manifest import verify

            _, data = verify(self._storage, chosen)
            checkpoint = load_bytes(data)
        return self._storage.url_of(f"{chosen}/{CKPT_FILE}"), checkpoint

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._uninstall_resume(trainer)
        if not self._active:
            return
        step = trainer.global_step
        if self._restored_from and self.resume:
            marker_step = int(self._progress.get("global_step", 0))
            marker_lost = int(self._progress.get("lost_steps_total", 0))
            lost = max(0, marker_step - step)
            self.lost_steps_total = max(self.lost_steps_total, marker_lost) + lost
            if lost:
                rank_zero_info(f"SpotCheckpoint: {lost} steps done after that checkpoint by an earlier attempt are re-done")
        self._last_saved_step = step if self._restored_from else None
        self._last_save_time = time.monotonic()
        if self._auto and self._save_cost_s is not None:
            self._update_interval(trainer, announce=True)
        if trainer.is_global_zero:
            write_progress(self._storage, step, self.lost_steps_total)
            self._last_progress_time = time.monotonic()

    # ------------------------------------------------------------------ triggers
    def _time_due(self) -> str | None:
        """This rank's time-based trigger, if due (ranks then agree through the shared flag reduce)."""
        if self._auto and self._save_cost_s is None:
            return "first save, to measure the save cost for every_seconds='auto'"
        if self._interval_s is not None and time.monotonic() - self._last_save_time >= self._interval_s:
            return f"every {self._interval_s:.0f} s"
        return None

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._active:
            return
        self._collect(trainer)
        step = trainer.global_step
        # Only where an optimizer step just ran: mid-window the partial gradients would be lost (exact resume).
        if step == self._last_saved_step or step == 0 or not at_optimizer_boundary(trainer):
            return
        due = []
        if self.every_n_steps and step % self.every_n_steps == 0:  # every rank knows the step: no collective
            due.append(f"every_n_steps={self.every_n_steps}")
        if self._interval_s is not None or self._auto:
            if trainer.world_size == 1:
                reason = self._time_due()
                due += [reason] if reason else []
            else:
                agreed = poll(trainer)  # one shared all-reduce every check_every_n_steps, none in between
                if agreed is not None and agreed.get("spot_checkpoint"):
                    due.append(self._time_due() or "time-based trigger on another rank")
        if due:
            self._save(trainer, reason="; ".join(due), periodic=True)
        elif trainer.is_global_zero and time.monotonic() - self._last_progress_time >= self.progress_every_seconds:
            write_progress(self._storage, step, self.lost_steps_total)
            self._last_progress_time = time.monotonic()

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._active:
            return
        if self.save_on_fit_end and trainer.global_step != self._last_saved_step:
            self._save(trainer, reason="fit_end", periodic=False)
        self._writer.wait()
        self._collect(trainer)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        try:
            self._writer.wait()
            self._collect(trainer)
        except Exception as err:  # noqa: BLE001 - do not mask the exception that stopped training
            rank_zero_warn(f"SpotCheckpoint: an in-flight save also failed: {err}")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._uninstall_resume(trainer)

    # ------------------------------------------------------------------ saving
    def save_now(self, trainer: pl.Trainer, reason: str = "manual") -> str:
        """Write a synchronous, verified, committed checkpoint of the current state and return its file URL.

        Waits for any in-flight async save first. Used for emergency (preemption) and budget stops.
        """
        url = self._save(trainer, reason=reason, periodic=False, force_sync=True)
        assert url is not None
        return url

    def _save(self, trainer: pl.Trainer, reason: str, periodic: bool, force_sync: bool = False) -> str | None:
        use_async = self.async_save and not force_sync
        may_skip = use_async and periodic and self.on_busy == "skip"
        busy = trainer.is_global_zero and self._writer.busy
        if may_skip and trainer.world_size > 1:
            busy = bool(trainer.strategy.broadcast(busy))  # every rank skips, or none (at save steps only)
        if busy:
            if may_skip:
                rank_zero_info(f"SpotCheckpoint: skipped a save at step {trainer.global_step} ({reason}): one is still in flight")
                return None
            rank_zero_info(f"SpotCheckpoint: waiting for the in-flight save before saving at step {trainer.global_step}")
        waited0 = time.perf_counter()
        self._writer.wait()
        self._collect(trainer)
        if torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        wait_s = start - waited0
        step = trainer.global_step
        self._dumping = True
        try:
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        finally:
            self._dumping = False
        name = trainer.strategy.broadcast(new_checkpoint_name(step) if trainer.is_global_zero else None)
        meta = {"reason": reason, "epoch": trainer.current_epoch, "async": use_async}
        url = self._storage.url_of(f"{name}/{CKPT_FILE}")
        if trainer.is_global_zero:
            if use_async:
                snapshot = snapshot_to_cpu(checkpoint, self._pool)
                del checkpoint
                self._writer.submit(lambda: self._write(snapshot, name, step, meta))
                blocked = time.perf_counter() - start + wait_s
            else:
                result = call_with_retries(lambda: self._write(checkpoint, name, step, meta), self._writer.retries, self._writer.backoff_s, self._on_retry)
                blocked = time.perf_counter() - start + wait_s
                self._writer.record(result)
            self.last_save_seconds = blocked
            self.blocked_seconds_total += blocked
            self._log(trainer, {"checkpoint/blocked_s": blocked})
            if not use_async:
                self._collect(trainer)
        trainer.strategy.barrier("SpotCheckpoint.save")
        if self._auto:  # on every rank, so each rank's time trigger knows the save cost was measured
            blocked = self.last_save_seconds if trainer.is_global_zero else time.perf_counter() - start + wait_s
            self._save_cost_s = blocked if self._save_cost_s is None else 0.5 * self._save_cost_s + 0.5 * blocked
        self._last_saved_step = step
        self._last_save_time = time.monotonic()
        if self._auto:
            self._update_interval(trainer, announce=False)
        return url

    def _write(self, state: Any, name: str, step: int, meta: dict[str, Any]) -> _SaveResult:
        """Serialize, commit (data, then the manifest), prune, record progress. Runs off-loop when async."""
        start = time.perf_counter()
        data = serialize(state)
        ref, written = commit_checkpoint(self._storage, {CKPT_FILE: data}, step, meta, name=name)
        deleted = apply_retention(self._storage, self.keep_last, name)
        write_progress(self._storage, step, self.lost_steps_total)
        return _SaveResult(ref.file_url, step, written, time.perf_counter() - start, deleted)

    def _collect(self, trainer: pl.Trainer) -> None:
        """Raise a failed background write; account and log the finished ones."""
        self._writer.raise_if_failed()
        for result in self._writer.pop_results():
            self.checkpoints_committed += 1
            self.bytes_written_total += result.bytes_written
            self.last_checkpoint = result.url
            self._last_write_s = result.write_seconds
            self._log(
                trainer,
                {
                    "checkpoint/written_bytes": float(result.bytes_written),
                    "checkpoint/write_s": result.write_seconds,
                    "checkpoint/committed_total": float(self.checkpoints_committed),
                },
                step=result.global_step,
            )
            if result.deleted:
                rank_zero_info(f"SpotCheckpoint: keep_last={self.keep_last} removed {', '.join(result.deleted)}")

    def _update_interval(self, trainer: pl.Trainer, announce: bool) -> None:
        cost = self._save_cost_s or 0.0
        # Never ask for saves faster than one can be written (async) - they would only be skipped.
        interval = max(young_daly_interval(cost, self.mtbf_seconds), self._last_write_s)
        previous = self._interval_s
        self._interval_s = interval
        self._log(trainer, {"checkpoint/interval_s": interval})
        if announce or previous is None or abs(interval - previous) > 0.1 * previous:
            rank_zero_info(
                f"SpotCheckpoint: every_seconds='auto' -> saving every {interval:.1f} s "
                f"(Young/Daly: sqrt(2 x {cost:.3f} s save x {self.mtbf_seconds:.0f} s MTBF))"
            )

    def _log(self, trainer: pl.Trainer, metrics: dict[str, float], step: int | None = None) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step if step is None else step)

    def _on_retry(self, attempt: int, err: BaseException) -> None:
        rank_zero_warn(f"SpotCheckpoint: writing to {self.dirpath} failed (attempt {attempt}), retrying: {err}")


def find_spot_checkpoint(trainer: pl.Trainer) -> Any | None:
    """The trainer's SpotCheckpoint (duck-typed: any callback with ``save_now``), else ``None``.

    PreemptionHandler (emergency save) and CostMonitor (budget stop, checkpoint figures) find it this way.
    """
    return next((c for c in trainer.callbacks if hasattr(c, "save_now") and callable(c.save_now)), None)
