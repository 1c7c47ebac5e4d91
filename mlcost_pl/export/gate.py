"""The accuracy gate: evaluate a quantized model with the module's own metric, keep the worst layers in fp32 until
the drop is within bounds, or fail with the figures."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from mlcost_pl.errors import UserInputError


class GateFailedError(RuntimeError):
    """The quantized model lost more than ``max_accuracy_drop`` even with layers kept in fp32."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        last = result.attempts[-1] if result.attempts else {}
        super().__init__(
            f"accuracy gate failed: {result.metric} fp32 {result.fp32:.4f}, int8 {result.quantized:.4f}, "
            f"drop {result.drop:.4f} > export.max_accuracy_drop={result.max_drop:g} after {len(result.attempts)} "
            f"attempt(s), the last keeping {len(last.get('kept_fp32', []))} layer(s) in fp32; "
            f"drops per attempt: {[round(a['drop'], 4) for a in result.attempts]}. No export was written."
        )


@dataclass
class GateResult:
    """What the gate found; ``kept_fp32`` lists the layers left unquantized with their measured error."""

    metric: str
    fp32: float
    quantized: float
    drop: float
    max_drop: float
    passed: bool
    kept_fp32: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: ``export.metric=`` value that forces the built-in top-1 accuracy of the logits.
TOP1 = "top1"


@dataclass
class GateMetric:
    """The metric exports are gated on.

    Attributes:
        name: its key in the report (``val/acc`` for ``module.val_acc``, ``top1`` for the built-in one).
        metric: a fresh ``torchmetrics.Metric`` (on CPU) that takes ``(logits, target)``.
        source: one sentence saying where it came from, for the report.
        higher_is_better: the metric's direction.
    """

    name: str
    metric: Any
    source: str
    higher_is_better: bool = True


def _candidates(module: torch.nn.Module) -> list[tuple[str, Any]]:
    """``(attribute name, metric)`` of the module's torchmetrics metrics, ``val_*`` first."""
    import torchmetrics

    found = [(n, m) for n, m in module.named_modules() if n and isinstance(m, torchmetrics.Metric)]
    return sorted(found, key=lambda nm: (not nm[0].split(".")[-1].startswith("val_"), nm[0]))


def _key(attr: str) -> str:
    leaf = attr.split(".")[-1]
    return f"val/{leaf[4:]}" if leaf.startswith("val_") else leaf


def _try(metric: Any, logits: torch.Tensor, target: torch.Tensor) -> str | None:
    """None when ``metric`` takes ``(logits, target)`` and computes a scalar, else why not (one short phrase)."""
    from torchmetrics.aggregation import BaseAggregator

    if isinstance(metric, BaseAggregator):  # MeanMetric & co. average one value (a loss), not (logits, target)
        return f"{type(metric).__name__} aggregates a single value"
    probe = metric.clone().cpu()
    probe.reset()
    try:
        probe.update(logits, target)
        value = probe.compute()
    except Exception as err:  # noqa: BLE001 - any failure means it does not take (logits, target)
        return f"{type(err).__name__}: {' '.join(str(err).split())[:120]}"
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        return "does not compute a single number"
    return None


def _fresh(metric: Any) -> Any:
    out = metric.clone().cpu()
    out.reset()
    return out


def module_metric(module: torch.nn.Module, logits: torch.Tensor | None = None, target: torch.Tensor | None = None,
                  name: str | None = None) -> GateMetric:
    """The metric to gate exports of ``module`` on, checked against a real ``(logits, target)`` batch.

    * ``name`` given (``export.metric=``): the torchmetrics attribute of that name (``val_acc`` or its log key
      ``val/acc``), or ``"top1"`` for the built-in top-1 accuracy; it must take ``(logits, target)``.
    * otherwise the first torchmetrics attribute (``val_*`` ones first) that takes ``(logits, target)`` and computes
      one number; ``MeanMetric``-style aggregators (a logged loss) are skipped.
    * otherwise top-1 accuracy of the logits (``torchmetrics`` ``MulticlassAccuracy``, micro average), and the
      report says so.

    Args:
        module: the model.
        logits: the model's output on a validation batch; ``target`` its labels. ``None`` skips the check.
        name: the metric to use, or ``None`` to choose.

    Raises:
        UserInputError: ``name`` is not a metric of the module or does not take ``(logits, target)``, or nothing
            fits (one line listing the candidates and why each was refused).

    Example:
        >>> import torchmetrics
        >>> m = torch.nn.Module()
        >>> m.val_loss = torchmetrics.MeanMetric()
        >>> m.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=3)
        >>> module_metric(m, torch.randn(4, 3), torch.tensor([0, 1, 2, 1])).name
        'val/acc'
    """
    candidates = _candidates(module)
    checked = logits is not None and target is not None
    refused: list[str] = []
    if name is not None:
        if name == TOP1:
            candidates = []
        else:
            chosen = [(a, m) for a, m in candidates if name in (a, a.split(".")[-1], _key(a))]
            if not chosen:
                names = [a for a, _ in candidates] + [TOP1]
                raise UserInputError(f"export.metric={name!r} is not a torchmetrics metric of "
                                     f"{type(module).__name__}; candidates: {', '.join(names)}")
            candidates = chosen
    for attr, metric in candidates:
        why = _try(metric, logits, target) if checked else None
        if why is None:
            return GateMetric(_key(attr), _fresh(metric), f"the module's own metric {attr} ({type(metric).__name__})",
                              getattr(metric, "higher_is_better", True) is not False)
        refused.append(f"{attr} ({why})")
    if name is not None and name != TOP1:
        raise UserInputError(f"export.metric={name!r} does not evaluate (logits, target): {refused[0]}")
    if checked and logits.dim() == 2 and logits.shape[1] >= 2 and not target.is_floating_point():
        from torchmetrics.classification import MulticlassAccuracy

        top1 = MulticlassAccuracy(num_classes=int(logits.shape[1]), top_k=1, average="micro")
        if _try(top1, logits, target) is None:
            why = "export.metric=top1" if name == TOP1 else (
                f"no torchmetrics metric of {type(module).__name__} takes (logits, target)"
                + (f": {'; '.join(refused)}" if refused else ""))
            return GateMetric(TOP1, top1, f"top-1 accuracy of the logits ({why})", True)
    shape = f"logits {tuple(logits.shape)}, target {tuple(target.shape)} {target.dtype}" if checked else "no batch given"
    raise UserInputError(
        f"export: no metric to gate {type(module).__name__} on ({shape}); candidates: "
        f"{'; '.join(refused) or 'none'}; top-1 accuracy needs (N, classes) logits and integer labels; "
        "add a torchmetrics metric taking (logits, target) to the module or pass export.metric=<name>"
    )


def evaluate(predict: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             metric: Any) -> float:
    """Run ``predict`` (inputs -> logits) over ``(x, y)`` batches and compute ``metric`` from scratch."""
    metric.reset()
    seen = 0
    for x, y in batches:
        metric.update(predict(x), y)
        seen += len(y)
    if not seen:
        raise UserInputError("the validation split is empty: nothing to evaluate the export on")
    value = float(metric.compute())
    metric.reset()
    return value


def metric_drop(fp32: float, quantized: float, higher_is_better: bool = True) -> float:
    """How much worse ``quantized`` is than ``fp32`` (positive = worse)."""
    return fp32 - quantized if higher_is_better else quantized - fp32


def exclusion_schedule(n_layers: int) -> list[int]:
    """How many of the worst layers to keep in fp32 on each attempt: 0, 1, 2, 4, ... up to ``n_layers - 1``.

    At least one layer always stays quantized: a model with every weight layer in fp32 is an fp32 model, which the
    gate will not pass off as INT8.

    Example:
        >>> exclusion_schedule(6)
        [0, 1, 2, 4, 5]
        >>> exclusion_schedule(1)
        [0]
    """
    counts, k = [0], 1
    while k < n_layers - 1:
        counts.append(k)
        k *= 2
    if n_layers > 1 and counts[-1] != n_layers - 1:
        counts.append(n_layers - 1)
    return counts


def run_gate(
    metric: str,
    fp32: float,
    evaluate_keeping: Callable[[list[str]], float],
    ranked_layers: Callable[[], Sequence[dict[str, Any]]],
    max_drop: float,
    higher_is_better: bool = True,
) -> GateResult:
    """Quantize, evaluate, and keep the worst layers in fp32 until ``drop <= max_drop`` or one is left quantized.

    Args:
        metric: the metric's name, for the report.
        fp32: the fp32 model's metric.
        evaluate_keeping: builds the quantized model with the given layer names kept in fp32 and returns its metric.
        ranked_layers: computed only if the first attempt fails; ``[{"name", "error", ...}]`` worst first.
        max_drop: the largest acceptable drop, in metric units (0.01 = one accuracy point).

    Raises:
        ValueError: ``max_drop`` is negative.
    """
    if max_drop < 0:
        raise UserInputError(f"export.max_accuracy_drop must be >= 0, got {max_drop}")
    attempts: list[dict[str, Any]] = []
    value = evaluate_keeping([])
    drop = metric_drop(fp32, value, higher_is_better)
    attempts.append({"kept_fp32": [], "metric": value, "drop": drop})
    kept: list[dict[str, Any]] = []
    if drop > max_drop:
        ranked = list(ranked_layers())
        for count in exclusion_schedule(len(ranked))[1:]:
            kept = [dict(r, reason=f"{r['error']:.3g} relative output error added by quantizing it, "
                                   f"rank {i + 1} of {len(ranked)}") for i, r in enumerate(ranked[:count])]
            value = evaluate_keeping([r["name"] for r in kept])
            drop = metric_drop(fp32, value, higher_is_better)
            attempts.append({"kept_fp32": [r["name"] for r in kept], "metric": value, "drop": drop})
            if drop <= max_drop:
                break
    return GateResult(metric, fp32, value, drop, max_drop, drop <= max_drop, kept, attempts)
