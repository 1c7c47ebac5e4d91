"""The accuracy gate: evaluate a quantized model with the module's own metric, keep the worst layers in fp32 until
the drop is within bounds, or fail with the figures."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


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


def module_metric(module: torch.nn.Module) -> tuple[str, Any]:
    """The module's own validation metric: ``(log_key, fresh metric)``.

    Looks for a ``torchmetrics.Metric`` attribute named ``val_*`` (``ImageClassifier.val_acc`` -> ``"val/acc"``).

    Raises:
        ValueError: the module has no ``val_*`` torchmetrics metric.
    """
    import torchmetrics

    for name, child in module.named_children():
        if isinstance(child, torchmetrics.Metric) and name.startswith("val_"):
            metric = child.clone()
            metric.reset()
            return f"val/{name[4:]}", metric.cpu()
    raise ValueError(
        f"module: {type(module).__name__} has no torchmetrics metric attribute named val_* to evaluate exports with"
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
        raise ValueError("the validation split is empty: nothing to evaluate the export on")
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
        raise ValueError(f"export.max_accuracy_drop must be >= 0, got {max_drop}")
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
