"""The savings table: rows of measured savings next to the classic claims, monthly dollars, the combined estimate, and
the md/json/png writers. Pure Python (matplotlib only for the chart); no torch, no Lightning.

A row's ``saving`` is the measured fraction of the bill it acts on that the technique removes (0.3 = 30 % cheaper;
negative = it costs more here). Rows that were not measured carry ``saving=None`` and say why; nothing is guessed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.utils.fs import atomic_write_local

# The classic "typical savings" table: key -> (technique, low, high, the bill it acts on).
CLAIMS: dict[str, tuple[str, float, float, str]] = {
    "spot": ("spot instances", 0.60, 0.90, "train"),
    "precision": ("mixed precision", 0.30, 0.50, "train"),
    "batch_size": ("batch size", 0.10, 0.30, "train"),
    "transfer": ("transfer learning", 0.70, 0.90, "train"),
    "quantization": ("quantization", 0.40, 0.60, "serve"),
    "batching": ("batch inference", 0.40, 0.60, "serve"),
    "autoscale": ("auto-scaling", 0.20, 0.40, "serve"),
    "compression": ("data compression", 0.70, 0.90, "storage"),
    "feature_cache": ("feature caching", 0.10, 0.30, "train"),
}
BILLS = ("train", "serve", "storage")
MEASURED, FAILED, NOT_MEASURED = "measured", "failed", "not measured"


@dataclass
class Row:
    """One technique's line in the table.

    Args:
        key: a key of :data:`CLAIMS`.
        saving: measured fraction of the bill it acts on that it removes (negative: it costs more); ``None`` when not
            measured.
        status: ``measured``, ``failed`` (the measurement raised; ``note`` is the one-line cause) or ``not measured``.
        note: the conditions of the measurement, or why there is none.
        command: the command that reproduces the row.
        figures: the raw figures behind ``saving`` (JSON-able).
    """

    key: str
    saving: float | None = None
    status: str = NOT_MEASURED
    note: str = ""
    command: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.key not in CLAIMS:
            raise UserInputError(f"savings.rows: unknown row {self.key!r}; choose from {', '.join(CLAIMS)}")
        if self.status not in (MEASURED, FAILED, NOT_MEASURED):
            raise ValueError(f"status must be measured, failed or not measured, got {self.status!r}")
        if (self.saving is None) == (self.status == MEASURED):
            raise ValueError(f"row {self.key}: a measured row needs a saving and only a measured row has one")

    @property
    def technique(self) -> str:
        return CLAIMS[self.key][0]

    @property
    def acts_on(self) -> str:
        return CLAIMS[self.key][3]

    @property
    def claim(self) -> str:
        _, low, high, _ = CLAIMS[self.key]
        return f"{100 * low:.0f}-{100 * high:.0f}%"

    @property
    def costs_more(self) -> bool:
        """True when it was measured to cost more than it saves here (shown in red)."""
        return self.saving is not None and self.saving < 0


def check_workload(train_hours_per_month: float, predictions_per_month: float) -> None:
    """Raise a one-line error naming ``savings.train_hours_per_month``/``savings.predictions_per_month`` when bad."""
    for name, value in (("train_hours_per_month", train_hours_per_month), ("predictions_per_month", predictions_per_month)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UserInputError(f"savings.{name} must be a number >= 0, got {value!r}")
    if train_hours_per_month == 0 and predictions_per_month == 0:
        raise UserInputError("savings.train_hours_per_month and savings.predictions_per_month are both 0: no workload to price")


def monthly_bills(usd_per_hour: float, train_hours_per_month: float, predictions_per_month: float, replica_rps: float,
                  storage_usd_per_month: float = 0.0) -> dict[str, float]:
    """The monthly bill each technique acts on, before any technique.

    Assumptions (stated in the report): training runs ``train_hours_per_month`` instance-hours on demand; serving
    needs ``predictions_per_month / (replica_rps x 3600)`` replica-hours, one replica per instance, on demand;
    storage is the given figure.
    """
    if replica_rps <= 0:
        raise UserInputError(f"savings.replica_rps must be > 0, got {replica_rps!r}")
    return {"train": usd_per_hour * train_hours_per_month,
            "serve": usd_per_hour * predictions_per_month / (replica_rps * 3600.0),
            "storage": float(storage_usd_per_month)}


def monthly_usd(row: Row, bills: dict[str, float | None]) -> float | None:
    """Dollars per month the row saves on its bill (negative: it costs more); ``None`` when not measured."""
    bill = bills.get(row.acts_on)
    return None if row.saving is None or bill is None else row.saving * bill


# Training-bill rows that are alternatives, not factors. The transfer row's cached fine-tune already uses the feature
# cache and replaces training the whole model, whose step-time savings (batch size, precision) it does not get; so
# the combined estimate applies either the fine-tune path or the full-training path, whichever saves more.
FINETUNE_PATH = ("transfer", "feature_cache")  # at most one: transfer includes the cache
FULL_TRAINING_PATH = ("batch_size", "precision")  # compose: both speed up the whole model's step


def _helps(r: Row) -> bool:
    return r.saving is not None and r.saving > 0


def _applied(rows: list[Row], bill: str) -> tuple[list[Row], str]:
    """The rows the combined estimate applies to ``bill`` and, for the training bill, which path it took and why."""
    helping = [r for r in rows if r.acts_on == bill and _helps(r)]
    if bill != "train":
        return helping, ""
    common = [r for r in helping if r.key not in FINETUNE_PATH + FULL_TRAINING_PATH]
    finetune = sorted((r for r in helping if r.key in FINETUNE_PATH), key=lambda r: -r.saving)[:1]
    full = [r for r in helping if r.key in FULL_TRAINING_PATH]

    def keep(path: list[Row]) -> float:
        return math.prod(1.0 - min(r.saving, 1.0) for r in path)

    if finetune and (not full or keep(finetune) < keep(full)):
        left = [r.key for r in helping if r not in common and r not in finetune]
        why = (f"fine-tune path ({finetune[0].key}) saves more than full training"
               + (f"; left out as not additive: {', '.join(left)}" if left else ""))
        return common + finetune, why
    left = [r.key for r in helping if r.key in FINETUNE_PATH]
    why = ("full-training path" + (f"; left out as an alternative path: {', '.join(left)}" if left else "")) if full else ""
    return common + full, why


def combined(rows: list[Row], bills: dict[str, float | None]) -> dict[str, Any]:
    """The monthly bill before/after applying the techniques that help (measured saving > 0).

    No double counting: techniques acting on the same bill compose multiplicatively,
    ``after = before x prod(1 - saving_i)``, each assumed to act on that whole bill and independently of the others.
    On the training bill the fine-tune path (transfer, which already includes the feature cache; or the feature
    cache alone) and the full-training path (batch size x precision) are alternatives: the one that saves more is
    applied, with spot on top of either.
    """
    out: dict[str, Any] = {"bills": {}, "before_usd": 0.0, "after_usd": 0.0}
    for bill in BILLS:
        before = bills.get(bill)
        if before is None:  # unpriced (e.g. an unknown instance): left out of the estimate
            continue
        applied, why = _applied(rows, bill)
        after = before
        for r in applied:
            after *= 1.0 - min(r.saving, 1.0)
        out["bills"][bill] = {"before_usd": before, "after_usd": after, "techniques": [r.key for r in applied],
                              "path": why}
        out["before_usd"] += before
        out["after_usd"] += after
    out["saving"] = 1.0 - out["after_usd"] / out["before_usd"] if out["before_usd"] > 0 else 0.0
    out["assumption"] = ("each technique that helps is applied to the whole bill it acts on (train, serve or storage); "
                         "techniques on the same bill compose multiplicatively (after = before x prod(1 - saving)) as if "
                         "independent; on the training bill, fine-tuning a pretrained backbone (transfer, which includes "
                         "the feature cache) and speeding up full training (batch size x precision) are alternatives and "
                         "only the one that saves more is applied; techniques that cost more here are left out")
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"{'-' if x < 0 else ''}${abs(x):,.2f}"


def table_rows(rows: list[Row], bills: dict[str, float]) -> list[list[str]]:
    """The table as strings: technique, claim, measured, $/month, conditions, command."""
    out = []
    for r in rows:
        measured = _pct(r.saving) if r.status == MEASURED else ("failed" if r.status == FAILED else "not measured")
        out.append([r.technique, r.claim, measured, _usd(monthly_usd(r, bills)), r.note, r.command])
    return out


HEADER = ["technique", "classic claim", "measured saving", "$ / month", "conditions", "reproduce"]


def to_markdown(rows: list[Row], bills: dict[str, float], total: dict[str, Any], context: dict[str, Any]) -> str:
    """The report as Markdown: context, the table, the combined estimate."""
    lines = ["# Savings measured on this recipe", ""]
    lines += [f"- {k}: {v}" for k, v in context.items()]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r, cells in zip(rows, table_rows(rows, bills)):
        if r.costs_more:
            cells[2] = f"**{cells[2]} (costs more here)**"
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    lines += ["", "## Combined estimate", "", f"Assumption: {total['assumption']}.", "",
              "| bill | before $/month | after $/month | techniques |", "|---|---|---|---|"]
    for bill, b in total["bills"].items():
        path = f" ({b['path']})" if b.get("path") else ""
        lines.append(f"| {bill} | {_usd(b['before_usd'])} | {_usd(b['after_usd'])} | {', '.join(b['techniques']) or '-'}{path} |")
    lines.append(f"| **total** | {_usd(total['before_usd'])} | {_usd(total['after_usd'])} | {_pct(-total['saving'])} |")
    return "\n".join(lines) + "\n"


def to_json(rows: list[Row], bills: dict[str, float], total: dict[str, Any], context: dict[str, Any]) -> str:
    """The report as JSON (rows with their figures, bills, combined estimate, context)."""
    data = {"context": context, "bills": bills, "combined": total,
            "rows": [{**asdict(r), "technique": r.technique, "claim": list(CLAIMS[r.key][1:3]), "acts_on": r.acts_on,
                      "usd_per_month": monthly_usd(r, bills)} for r in rows]}
    return json.dumps(data, indent=2, default=str)


def plot(rows: list[Row], path: str | os.PathLike[str]) -> Path:
    """A PNG: measured saving (dot, red when negative) vs the claimed range (bar) per technique; atomic write."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        _, low, high, _ = CLAIMS[r.key]
        ax.barh(i, 100 * (high - low), left=100 * low, color="#cccccc", label="classic claim" if i == 0 else None)
        if r.saving is not None:
            ax.plot(100 * r.saving, i, "o", color="red" if r.costs_more else "green")
        else:
            ax.text(1, i, r.status, va="center", fontsize=8, color="gray")
    ax.set_yticks(range(len(rows)), [r.technique for r in rows])
    ax.axvline(0, color="black", linewidth=0.5)
    ax.set_xlabel("saving on the bill it acts on (%)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_local(path, buf.getvalue())
    return Path(path)


def write_report(rows: list[Row], bills: dict[str, float], context: dict[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write savings.md, savings.json and savings.png into ``out_dir`` (each atomically); return the combined estimate."""
    total = combined(rows, bills)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_local(out / "savings.md", to_markdown(rows, bills, total, context))
    atomic_write_local(out / "savings.json", to_json(rows, bills, total, context))
    plot(rows, out / "savings.png")
    return total
