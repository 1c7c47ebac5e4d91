"""The autoscale row: replica-hours of the recommended HPA vs static peak on a traffic trace."""

from __future__ import annotations

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext


def measure(ctx: RunContext) -> Row:
    """Replica-hours of the recommended HPA vs static peak on the trace, from the autoscale simulator's search, at one
    replica's capacity measured by the batching row (or given: :func:`~mlcost_pl.savings.rows.batching.serving_capacity`)."""
    from mlcost_pl.autoscale.capacity import Capacity
    from mlcost_pl.autoscale.plan import search
    from mlcost_pl.autoscale.trace import load_trace
    from mlcost_pl.savings.rows.batching import serving_capacity

    cfg, price = ctx.cfg, ctx.price
    s = cfg.savings
    measured = serving_capacity(ctx)
    capacity = Capacity(rps=float(measured["rps"]), slo_ms=measured["slo_ms"])
    trace = load_trace(str(s.trace), seed=int(cfg.seed))
    plan = search(trace, capacity, price.on_demand if price else 0.0, max_slo_miss=float(s.max_slo_miss))
    if plan.recommended is None:
        raise UserInputError(f"savings.max_slo_miss={s.max_slo_miss}: no HPA setting meets it on trace {s.trace}")
    saving = 1.0 - plan.recommended.replica_hours / plan.static.replica_hours
    note = (f"{trace.name} trace (peak {trace.rps.max():.0f}/s, {trace.duration_s / 3600:.0f} h): recommended HPA "
            f"{plan.recommended.replica_hours:.0f} vs static peak {plan.static.replica_hours:.0f} replica-hours, "
            f"{100 * plan.recommended.miss_share:.3f}% SLO misses; capacity {capacity.rps:g}/s per replica "
            f"({measured['source']})")
    command = f"uv run python -m recipes.autoscale plan capacity.rps={capacity.rps:g} trace={s.trace}"
    if price is not None:
        command += f" plan.instance={price.name}"
    return Row("autoscale", saving, MEASURED, note, command,
               {"recommended": plan.recommended.summary(), "static": plan.static.summary(), "values": plan.values,
                "capacity": measured})
