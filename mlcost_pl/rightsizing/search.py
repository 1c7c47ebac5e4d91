"""Pure batch-size search strategies: exponential growth then binary search, and a throughput pick with tolerance.

A *trial* is a callable ``fits(batch_size) -> bool`` (or ``measure(batch_size) -> samples/s | None``) supplied by the
caller; nothing here knows about Lightning, CUDA or memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mlcost_pl.errors import UserInputError


@dataclass
class SearchResult:
    """Outcome of a search.

    Attributes:
        batch_size: the chosen batch size (after the safety margin for ``max_fit``).
        largest_fit: the largest batch size that was seen to fit (``max_fit``) or the largest measured (``throughput``).
        trials: ``(batch_size, fits)`` in the order they were tried.
        samples_per_s: measured throughput per batch size (``throughput`` mode only; the faster of two readings for
            the batch sizes that were confirmed).
        search_s: seconds the trials took (``throughput`` mode; 0 when not timed).
        stopped: why the search stopped (``throughput`` mode): ``"does not fit"``, ``"max_batch_size"``,
            ``"slower"``, ``"max_trials"`` or ``"time budget"``.
        confirmed: batch sizes measured a second time before the pick (``throughput`` mode; not in ``trials``).
    """

    batch_size: int
    largest_fit: int
    trials: list[tuple[int, bool]] = field(default_factory=list)
    samples_per_s: dict[int, float] = field(default_factory=dict)
    search_s: float = 0.0
    stopped: str = ""
    confirmed: list[int] = field(default_factory=list)

    @property
    def num_trials(self) -> int:
        return len(self.trials)


def _check(init: int, max_batch_size: int | None, max_trials: int) -> None:
    if init < 1:
        raise UserInputError(f"init_batch_size must be >= 1, got {init}")
    if max_batch_size is not None and max_batch_size < 1:
        raise UserInputError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
    if max_trials < 2:
        raise UserInputError(f"max_trials must be >= 2, got {max_trials}")


def max_fit_search(
    fits: Callable[[int], bool],
    init: int = 32,
    max_batch_size: int | None = None,
    tolerance: float = 0.02,
    safety_margin: float = 0.02,
    max_trials: int = 16,
    growth: float = 2.0,
) -> SearchResult:
    """The largest batch size for which ``fits`` is true: grow by ``growth`` until a failure, then bisect.

    Bisection stops when the gap between the largest fit and the smallest failure is at most ``tolerance`` of the
    failure (so the answer is within ``tolerance`` below the true limit), or when ``max_trials`` is spent. If ``init``
    itself fails the search halves downwards. The answer is then reduced by ``safety_margin`` (a fraction).

    Args:
        fits: trial; true when one training step at that batch size fits in memory.
        init: first batch size tried.
        max_batch_size: never try above this (e.g. the dataset size); ``None`` for no bound.
        tolerance: relative width at which the bisection stops, in ``[0, 1)``.
        safety_margin: fraction taken off the largest fit, in ``[0, 1)``.
        max_trials: budget of calls to ``fits``.
        growth: factor of the exponential phase, > 1.

    Returns:
        The result; ``batch_size`` is 0 when not even a batch of 1 fits.

    Raises:
        ValueError: an argument out of range (named).

    Example:
        >>> r = max_fit_search(lambda b: b <= 300, init=32, safety_margin=0.0)
        >>> 285 <= r.batch_size <= 300, r.num_trials <= 12
        (True, True)
    """
    _check(init, max_batch_size, max_trials)
    if not 0 <= tolerance < 1:
        raise UserInputError(f"tolerance must be in [0, 1), got {tolerance}")
    if not 0 <= safety_margin < 1:
        raise UserInputError(f"safety_margin must be in [0, 1), got {safety_margin}")
    if growth <= 1:
        raise UserInputError(f"growth must be > 1, got {growth}")
    cap = max_batch_size if max_batch_size is not None else math.inf
    trials: list[tuple[int, bool]] = []

    def trial(b: int) -> bool:
        ok = bool(fits(b))
        trials.append((b, ok))
        return ok

    lo, hi = 0, None  # largest known fit, smallest known failure
    b = int(min(init, cap))
    # Exponential phase (upwards from init, or downwards if init fails).
    while len(trials) < max_trials:
        if trial(b):
            lo = b
            if b >= cap:
                break
            b = int(min(max(b + 1, math.floor(b * growth)), cap))
        else:
            hi = b
            if lo or b == 1:
                break
            b = max(1, b // 2)
    # Bisection between lo (fits) and hi (fails).
    while hi is not None and len(trials) < max_trials and hi - lo > max(1.0, tolerance * hi):
        mid = (lo + hi) // 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    chosen = max(1, math.floor(lo * (1 - safety_margin))) if lo else 0
    return SearchResult(batch_size=chosen, largest_fit=lo, trials=trials)


def pick_throughput(samples_per_s: dict[int, float], tolerance: float = 0.05) -> int:
    """The smallest batch size whose throughput is within ``tolerance`` of the best measured.

    Raises:
        ValueError: no measurements, or ``tolerance`` outside ``[0, 1)``.

    Example:
        >>> pick_throughput({32: 900.0, 64: 990.0, 128: 1000.0}, tolerance=0.05)
        64
    """
    if not samples_per_s:
        raise UserInputError("samples_per_s is empty: no batch size could be measured")
    if not 0 <= tolerance < 1:
        raise UserInputError(f"throughput_tolerance must be in [0, 1), got {tolerance}")
    best = max(samples_per_s.values())
    return min(b for b, v in samples_per_s.items() if v >= (1 - tolerance) * best)


def throughput_search(
    measure: Callable[[int], float | None],
    init: int = 32,
    max_batch_size: int | None = None,
    tolerance: float = 0.05,
    max_trials: int = 16,
    patience: int = 3,
    max_seconds: float | Callable[[dict[int, float]], float | None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    confirm: float = 0.25,
) -> SearchResult:
    """Measure samples/s at ``init * 2**k`` until a batch does not fit, the bound, or ``patience`` drops; pick one.

    Early trials in a fresh process read slow (allocator growth, kernel selection): the batch sizes within ``confirm``
    of the best are measured once more, in order, and each keeps its faster reading, so a warm-up artefact does not
    decide the pick (on CPU, TinyCNN's batch 64 read 3,968 samples/s as the second trial and 5,047 later).

    With ``max_seconds`` the search also stops before a trial that would end past that many seconds of searching.
    The next trial is expected to take the last one's time scaled by the batch ratio (a trial's time grows at most
    linearly with the batch once the device is busy). ``max_seconds`` may be a function of the speeds measured so
    far (e.g. a share of the run time they predict); ``None`` from it means no bound yet.

    Args:
        measure: trial; samples/s at that batch size, or ``None`` when it does not fit.
        init: first batch size measured.
        max_batch_size: the largest batch size measured (always included when reached).
        tolerance: pick the smallest batch within this fraction of the best throughput.
        max_trials: budget of calls to ``measure``.
        patience: stop after this many consecutive candidates slower than the best so far.
        max_seconds: time budget of the search, or a function ``speeds -> budget``; ``None``: unbounded.
        clock: seconds, monotonic (inject one in tests).
        confirm: re-measure the batch sizes within this fraction of the best before picking (0: off); skipped when
            the search stopped on its time budget or only one is that close.

    Raises:
        ValueError: an argument out of range (named).

    Example:
        >>> speed = {8: 100.0, 16: 190.0, 32: 200.0, 64: 195.0, 128: 150.0}
        >>> throughput_search(lambda b: speed.get(b), init=8, max_batch_size=128).batch_size
        16
    """
    _check(init, max_batch_size, max_trials)
    if not 0 <= tolerance < 1:
        raise UserInputError(f"throughput_tolerance must be in [0, 1), got {tolerance}")
    if not 0 <= confirm < 1:
        raise UserInputError(f"confirm must be in [0, 1), got {confirm}")
    cap = max_batch_size if max_batch_size is not None else math.inf
    trials: list[tuple[int, bool]] = []
    speeds: dict[int, float] = {}
    b, slower, stopped = int(min(init, cap)), 0, "max_trials"
    start = clock()
    while len(trials) < max_trials:
        t0 = clock()
        sps = measure(b)
        last_s = clock() - t0
        trials.append((b, sps is not None))
        if sps is None:
            if speeds or b == 1:
                stopped = "does not fit"
                break
            b = max(1, b // 2)  # init does not fit: go down
            continue
        slower = slower + 1 if speeds and sps < max(speeds.values()) else 0
        speeds[b] = float(sps)
        if trials[0][1] is False:  # came down from a batch that did not fit: the largest that fits is this one
            stopped = "does not fit"
            break
        if b >= cap:
            stopped = "max_batch_size"
            break
        if slower >= patience:
            stopped = "slower"
            break
        nxt = int(min(b * 2, cap))
        budget = max_seconds(dict(speeds)) if callable(max_seconds) else max_seconds
        if budget is not None and (clock() - start) + last_s * nxt / b > budget:
            stopped = "time budget"
            break
        b = nxt
    confirmed: list[int] = []
    if speeds and confirm > 0 and stopped != "time budget":
        best = max(speeds.values())
        close = sorted(b for b, v in speeds.items() if v >= (1 - confirm) * best)
        budget = max_seconds(dict(speeds)) if callable(max_seconds) else max_seconds
        for b in close if len(close) > 1 else []:
            if budget is not None and clock() - start > budget:
                break
            sps = measure(b)
            confirmed.append(b)
            if sps is not None:
                speeds[b] = max(speeds[b], float(sps))
    search_s = clock() - start
    if not speeds:
        return SearchResult(batch_size=0, largest_fit=0, trials=trials, search_s=search_s, stopped=stopped)
    return SearchResult(
        batch_size=pick_throughput(speeds, tolerance), largest_fit=max(speeds), trials=trials, samples_per_s=speeds,
        search_s=search_s, stopped=stopped, confirmed=confirmed,
    )


def expected_saving(total_samples: float, baseline_sps: float, chosen_sps: float, search_s: float = 0.0) -> dict[str, float]:
    """What training ``total_samples`` at ``chosen_sps`` instead of ``baseline_sps`` is expected to save.

    Returns:
        ``baseline_s`` and ``chosen_s`` (expected training seconds), ``saving_s`` (their difference minus the
        ``search_s`` spent finding it; negative when the search cost more than it saves) and ``saving_share``
        (``saving_s / baseline_s``).

    Raises:
        ValueError: a non-positive throughput or a negative sample count.

    Example:
        >>> expected_saving(10_000, baseline_sps=100.0, chosen_sps=250.0, search_s=10.0)["saving_s"]
        50.0
    """
    if baseline_sps <= 0 or chosen_sps <= 0:
        raise UserInputError(f"throughputs must be > 0, got baseline {baseline_sps} and chosen {chosen_sps}")
    if total_samples < 0:
        raise UserInputError(f"total_samples must be >= 0, got {total_samples}")
    baseline_s, chosen_s = total_samples / baseline_sps, total_samples / chosen_sps
    saving = baseline_s - chosen_s - search_s
    return {"baseline_s": baseline_s, "chosen_s": chosen_s, "saving_s": saving,
            "saving_share": saving / baseline_s if baseline_s > 0 else 0.0}


def fit_global_batch(per_device: int, global_batch: int, world_size: int = 1) -> tuple[int, int]:
    """A ``(batch_size, accumulate_grad_batches)`` no larger than ``per_device`` that keeps ``global_batch`` exact.

    The batch size is the largest divisor of ``global_batch / world_size`` not above ``per_device``.

    Raises:
        ValueError: ``global_batch`` is not a positive multiple of ``world_size``, or ``per_device < 1``.

    Example:
        >>> fit_global_batch(300, 1024)
        (256, 4)
        >>> fit_global_batch(300, 64)
        (64, 1)
    """
    if per_device < 1:
        raise UserInputError(f"per_device batch size must be >= 1, got {per_device}")
    if global_batch < 1 or world_size < 1 or global_batch % world_size:
        raise UserInputError(f"global_batch_size={global_batch} must be a positive multiple of world_size={world_size}")
    per_rank = global_batch // world_size
    b = next(d for d in range(min(per_device, per_rank), 0, -1) if per_rank % d == 0)
    return b, per_rank // b


def min_over_ranks(value: int, group: object | None = None) -> int:
    """The minimum of ``value`` over all ranks (identity when torch.distributed is not initialized).

    Every rank must call it (it is a collective). Uses the default process group unless ``group`` is given.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return int(value)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
    t = torch.tensor([int(value)], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=group)
    return int(t.item())


def explain_choice(
    mode: str,
    result: SearchResult,
    original: int,
    batch: int,
    accumulate: int,
    global_batch: int,
    world_size: int = 1,
    keep_global_batch: bool = True,
    lr_scale: float = 1.0,
    saving: dict[str, float] | None = None,
    baseline_batch: int | None = None,
) -> str:
    """One line saying what a batch-size search found, what is used, why, and how to get the other choice.

    Args:
        mode: ``"max_fit"`` or ``"throughput"``.
        result: the search result (``batch_size`` agreed by all ranks).
        original: the per-device batch configured before the search.
        batch: the per-device batch used; ``accumulate`` the gradient accumulation set.
        global_batch: the global batch before the search.
        world_size: number of ranks.
        keep_global_batch: whether the global batch was held constant.
        lr_scale: the factor applied to the learning rates.
        saving: :func:`expected_saving` of the choice (throughput mode).
        baseline_batch: the batch ``saving`` compares against.

    Example:
        >>> r = SearchResult(batch_size=713, largest_fit=728)
        >>> line = explain_choice("max_fit", r, original=4, batch=4, accumulate=1, global_batch=4)
        >>> "fits: 728" in line and "keep_global_batch=False" in line
        True
    """
    new_global = batch * accumulate * world_size
    ranks = f" x {world_size} ranks" if world_size > 1 else ""
    if mode == "max_fit":
        found = f"largest batch that fits: {result.largest_fit}"
        if result.batch_size != result.largest_fit:
            found += f" ({result.batch_size} after safety_margin)"
    else:
        speeds = ", ".join(f"{b}: {v:.0f}" for b, v in sorted(result.samples_per_s.items()))
        best = max(result.samples_per_s, key=result.samples_per_s.__getitem__) if result.samples_per_s else result.batch_size
        found = f"fastest: batch {result.batch_size}"
        if best != result.batch_size:
            found += f" (within throughput_tolerance of {best})"
        found += f"; samples/s by batch {{{speeds}}}"
        if result.stopped:
            found += f", stopped: {result.stopped}"
    used = f"using batch_size {batch}" + (f" x accumulate_grad_batches {accumulate}" if accumulate > 1 else "")
    if keep_global_batch:
        per_rank = global_batch // max(world_size, 1)
        if result.batch_size >= per_rank:
            why = (f"keep_global_batch=True holds the global batch at {global_batch} (batch {batch} x accumulate {accumulate}{ranks})"
                   f"{', which already fits' if mode == 'max_fit' else ''}; pass keep_global_batch=False (with "
                   f"lr_scaling='linear' or 'sqrt') or global_batch_size=N to let the batch grow")
        else:
            why = (f"{per_rank} per device {'does not fit' if mode == 'max_fit' else 'is not the pick'}, so "
                   f"keep_global_batch=True accumulates {accumulate} batches to keep the global batch at {global_batch}")
    else:
        why = f"keep_global_batch=False: global batch {global_batch} -> {new_global}, learning rates x{lr_scale:.3g}"
        if lr_scale == 1.0 and new_global != global_batch:
            why += " (lr_scaling='none'; 'linear' or 'sqrt' scales them)"
    line = f"BatchSizeSearch({mode}): {found}; {used} (was {original}): {why}"
    if saving is not None:
        line += (f"; expected saving {saving['saving_s']:.1f}s ({100 * saving['saving_share']:.1f}% of "
                 f"{saving['baseline_s']:.1f}s at batch {baseline_batch}, search time included)")
    return line
