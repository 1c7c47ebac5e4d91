"""Resolve modules by attribute name or glob, freeze them for real (BatchNorm included), unfreeze them, split them in groups.

"Frozen" here means what a user expects: parameters get no gradient *and* the module runs in eval mode, so BatchNorm
running statistics stay bit-identical and Dropout is off (Lightning's ``BaseFinetuning.freeze(train_bn=False)`` only
stops the affine parameters, while the running statistics keep moving with every batch).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from torch import nn

from mlcost_pl.errors import UserInputError

_BN = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def resolve_modules(model: nn.Module, patterns: str | Sequence[str]) -> dict[str, nn.Module]:
    """Find the submodules named by ``patterns``.

    A pattern is a dotted attribute path (``"backbone"``, ``"backbone.layer4"``) or an ``fnmatch`` glob over
    ``model.named_modules()`` names (``"backbone.layer[1-3]"``, ``"encoder.*"``). Modules nested inside an already
    matched module are dropped, so each parameter belongs to exactly one returned module.

    Returns:
        ``{name: module}`` in ``named_modules`` order (from the input towards the head).

    Raises:
        ValueError: ``modules`` is empty, or a pattern matches nothing (the message lists the top-level names).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> list(resolve_modules(net, ["0", "2"]))
        ['0', '2']
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = list(patterns)
    if not patterns:
        raise UserInputError("modules must name at least one module (attribute name or glob), got []")
    named = dict(model.named_modules())
    matched: set[str] = set()
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise UserInputError(f"modules: each entry must be a non-empty string, got {pattern!r}")
        hits = [n for n in named if n and (n == pattern or fnmatch.fnmatchcase(n, pattern))]
        if not hits:
            top = [n for n, _ in model.named_children()]
            raise UserInputError(f"modules: {pattern!r} matches no submodule of {type(model).__name__}; top-level names: {top}")
        matched.update(hits)
    # Keep outermost matches only: "backbone" and "backbone.*" both matched means "backbone".
    outer = [n for n in named if n in matched and not any(n.startswith(m + ".") for m in matched if m != n)]
    return {n: named[n] for n in outer}


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _BN)


def freeze(modules: Iterable[nn.Module], train_bn: bool = False) -> None:
    """Stop gradients to every parameter of ``modules`` and put them in eval mode.

    Args:
        modules: the modules to freeze.
        train_bn: keep normalization layers trainable and in train mode (Lightning's ``train_bn=True``). With
            ``False`` (the default) they are truly frozen: eval mode, running statistics unchanged.
    """
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
        # ``modules()`` is pre-order, so each module's own flag is the last one written to it.
        for sub in module.modules():
            keep = train_bn and _is_norm(sub)
            for p in sub.parameters(recurse=False):
                p.requires_grad_(keep)
            sub.train(keep)


def set_eval(modules: Iterable[nn.Module], train_bn: bool = False) -> None:
    """Re-apply the eval mode of frozen ``modules`` after something called ``model.train()``."""
    for module in modules:
        for sub in module.modules():
            sub.train(train_bn and _is_norm(sub))


def unfreeze(modules: Iterable[nn.Module], training: bool = True) -> None:
    """Make every parameter of ``modules`` trainable again and restore the mode given by ``training``."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
        module.train(training)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``model`` (shared parameters counted once)."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def split_groups(modules: dict[str, nn.Module], num_groups: int) -> list[dict[str, nn.Module]]:
    """Split the frozen modules into ``num_groups`` unfreezing groups, **from the head down**.

    The modules are expanded into their parameter-holding children (in forward order) until there are enough
    leaves, then cut into contiguous runs; group 0 is the run nearest the head (unfrozen first), the last group holds
    the input stem.

    Raises:
        ValueError: ``num_groups`` < 1 or larger than the number of parameter-holding blocks.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
        >>> [list(g) for g in split_groups({"": net}, 3)]
        [['2'], ['1'], ['0']]
    """
    if num_groups < 1:
        raise UserInputError(f"groups must be >= 1, got {num_groups}")
    blocks = [(n, m) for n, m in modules.items() if any(True for _ in m.parameters())]
    while len(blocks) < num_groups:
        expanded, grew = [], False
        for name, m in blocks:
            kids = [(f"{name}.{c}" if name else c, k) for c, k in m.named_children() if any(True for _ in k.parameters())]
            own = any(True for _ in m.parameters(recurse=False))
            if kids and not own:
                expanded.extend(kids)
                grew = True
            else:
                expanded.append((name, m))
        blocks = expanded
        if not grew:
            break
    if len(blocks) < num_groups:
        raise UserInputError(f"groups={num_groups} but the frozen modules have only {len(blocks)} parameter blocks: {[n for n, _ in blocks]}")
    # Contiguous runs of near-equal size, counted from the head end.
    blocks = blocks[::-1]
    size, extra = divmod(len(blocks), num_groups)
    out, start = [], 0
    for i in range(num_groups):
        stop = start + size + (1 if i < extra else 0)
        out.append(dict(blocks[start:stop]))
        start = stop
    return out
