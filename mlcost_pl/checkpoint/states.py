"""Match the callback states stored in a checkpoint to the callbacks of the resuming Trainer.

Lightning looks a callback's state up by ``state_key`` and silently ignores the rest. Keys that embed an instance
type or a folder path (``CostMonitor{'instance': 'g5.xlarge', ...}``) then drop totals, run ids and RNG states as
soon as a run resumes on another machine or from a moved folder. :func:`claim_callback_states` maps such keys (from
older checkpoints) to the key a callback has now, when exactly one stored key of the callback's class is unclaimed,
and reports what no callback claims, so the caller can warn. Pure logic: no Lightning import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def claim_callback_states(stored: Iterable[str], callbacks: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Which stored state keys each callback claims, and which stay unclaimed.

    Args:
        stored: the keys of ``checkpoint["callbacks"]``.
        callbacks: ``(state_key, class name)`` of every callback on the resuming Trainer.

    Returns:
        ``(renames, unclaimed)``: ``renames`` maps a stored key to the state key of the callback it belongs to (only
        for keys that need moving); ``unclaimed`` lists, sorted, the keys no callback will load.

    Example:
        >>> claim_callback_states(["CostMonitor{'instance': 'a'}", "Gone"], [("CostMonitor", "CostMonitor")])
        ({"CostMonitor{'instance': 'a'}": 'CostMonitor'}, ['Gone'])
    """
    stored = list(stored)
    callbacks = list(callbacks)
    claimed = {key for key, cls in callbacks if key in stored} | {cls for key, cls in callbacks if cls in stored}
    renames: dict[str, str] = {}
    for key, cls in callbacks:
        if key in stored or cls in stored:
            continue
        candidates = [s for s in stored if s not in claimed and s.split("{", 1)[0] == cls]
        same_class = sum(1 for _, c in callbacks if c == cls)
        if len(candidates) == 1 and same_class == 1:
            renames[candidates[0]] = key
            claimed.add(candidates[0])
    return renames, sorted(s for s in stored if s not in claimed)


def apply_renames(states: Mapping[str, object], renames: Mapping[str, str]) -> dict[str, object]:
    """A copy of ``states`` with the keys in ``renames`` moved to their new names."""
    out = {k: v for k, v in states.items() if k not in renames}
    for old, new in renames.items():
        out[new] = states[old]
    return out
