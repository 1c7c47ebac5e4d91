"""Autoscaling that pays: ``uv run python -m recipes.autoscale plan|measure [overrides]``.

``plan`` reads top to bottom: capacity, trace, price, search (replays of static peak, the classic HPA, the candidates
and KEDA), table, plan.json, plan.png, the Kubernetes manifests with the recommended values.
``measure`` starts ``recipes.serve`` on loopback, ramps an open-loop load and writes ``capacity.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlcost_pl.config import register_resolvers
from mlcost_pl.errors import UserInputError
from recipes._cli import positional_command, run_cli

register_resolvers()

COMMANDS = ("plan", "measure")


def _capacity(cfg: DictConfig):
    from mlcost_pl.autoscale.capacity import load_capacity

    source = cfg.capacity
    if isinstance(source, DictConfig):
        given = {k: v for k, v in OmegaConf.to_container(source, resolve=True).items() if v is not None}
        if "rps" not in given:
            raise UserInputError("capacity is required: capacity=<capacity.json from recipes.autoscale measure> or "
                             "capacity.rps=<requests/s one replica sustains at the SLO>")
        return load_capacity(given, model_dir=cfg.get("model_dir"))
    return load_capacity(str(source), model_dir=cfg.get("model_dir"))


def cpu_cores(quantity: Any) -> float:
    """A Kubernetes CPU quantity (``"1"``, ``"1.5"``, ``"500m"``) in cores.

    Raises:
        ValueError: not a CPU quantity (named ``plan.deploy.cpu``).
    """
    text = str(quantity).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise UserInputError(f"plan.deploy.cpu must be a CPU quantity like '1' or '500m', got {quantity!r}") from None
    if not cores > 0:
        raise UserInputError(f"plan.deploy.cpu must be > 0, got {quantity!r}")
    return cores


def plan(cfg: DictConfig) -> dict[str, Any]:
    """Search the cheapest autoscaling setting for ``cfg.trace`` under ``cfg.plan.max_slo_miss``; write the plan."""
    from rich.console import Console
    from rich.table import Table

    from mlcost_pl.autoscale.capacity import write_json
    from mlcost_pl.autoscale.plan import plot, search, table_rows, usd_per_replica_hour
    from mlcost_pl.autoscale.trace import load_trace, write_trace
    from mlcost_pl.serve.deploy import DeploySettings, settings_dict, write_k8s_manifests

    p = cfg.plan
    capacity = _capacity(cfg)
    trace = load_trace(cfg.trace, seed=int(cfg.seed))
    if p.get("peak_rps") is not None:
        trace = trace.scaled(float(p.peak_rps))
    price = usd_per_replica_hour(str(p.instance), str(p.market), p.usd_per_hour, int(p.replicas_per_instance))
    deploy_options = OmegaConf.to_container(p.deploy, resolve=True)
    try:
        DeploySettings.from_dict(deploy_options)  # bad deploy settings fail before the search
    except ValueError as err:  # serve.deploy's checks name deploy.<field>; here they live under plan.deploy
        raise UserInputError(f"plan.{err}") from None
    # capacity.json has CPU in % of one core; the HPA's target is in % of the pod's request
    cores = cpu_cores(deploy_options.get("cpu", "1"))
    capacity = dataclasses.replace(capacity, cpu_utilization_at_capacity=capacity.cpu_utilization_at_capacity / cores)
    result = search(trace, capacity, price, max_slo_miss=float(p.max_slo_miss), targets=list(p.targets),
                    windows=list(p.windows), min_replicas=int(p.min_replicas),
                    scale_down_percent=int(deploy_options["scale_down_percent"]),
                    scale_down_period_s=int(deploy_options["scale_down_period_s"]),
                    classic_max_replicas=int(p.classic_max_replicas))

    out = Path(str(p.out))
    rows = table_rows(result)
    table = Table(title=f"{trace.name}: {trace.duration_s / 3600:.1f} h, {trace.total_requests:,.0f} requests, peak "
                        f"{trace.rps.max():.0f}/s; capacity {capacity.rps:g}/s per replica, start-up {capacity.startup_s:g} s; "
                        f"${price:.4f} per replica-hour ({p.instance}, {p.market})", title_justify="left")
    for column in ("policy", "replica-hours", "vs static", "USD", "SLO misses", "peak replicas", f"<= {100 * p.max_slo_miss:g} %"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["policy"], f"{r['replica_hours']:.1f}", f"{100 * r['replica_hours_vs_static']:+.1f} %",
                      f"{r['usd']:.2f}", f"{100 * r['miss_share']:.3f} %", str(r["peak_replicas"]),
                      "yes" if r["meets_slo"] else "NO")
    console = Console(width=160)
    console.print(table)

    settings = DeploySettings.from_dict({**deploy_options, **result.values})
    report = {
        "trace": {"name": trace.name, "seed": int(cfg.seed), "duration_s": trace.duration_s, "step_s": trace.step_s,
                  "requests": trace.total_requests, "peak_rps": float(trace.rps.max())},
        "capacity": capacity.to_dict(),
        "price": {"instance": str(p.instance), "market": str(p.market), "usd_per_replica_hour": price,
                  "replicas_per_instance": int(p.replicas_per_instance)},
        "max_slo_miss": float(p.max_slo_miss),
        "policies": {key: r.summary() for key, r in zip(("static_peak", "classic_hpa", "recommended_hpa", "keda"),
                                                         (result.static, result.classic, result.recommended, result.keda))
                     if r is not None},
        "recommended": result.values,
        "deploy": settings_dict(settings),
        "candidates": result.candidates,
    }
    write_trace(trace, out / "trace.csv")
    plot(result, trace, out / "plan.png")
    manifests = write_k8s_manifests(settings, out / "k8s")
    write_json(report, out / "plan.json")
    rec = result.values
    console.print(f"recommended: HPA CPU {rec['cpu_target_utilization']} %, min {rec['min_replicas']}, max "
                  f"{rec['max_replicas']}, scale-down window {rec['scale_down_stabilization_s']} s "
                  f"({100 * result.recommended.miss_share:.3f} % of requests over the SLO, "
                  f"{100 * (1 - result.recommended.replica_hours / result.static.replica_hours):.0f} % fewer replica-hours "
                  f"than static peak)")
    console.print(f"wrote {out / 'plan.json'}, {out / 'plan.png'}, {out / 'trace.csv'}, {len(manifests)} files in {out / 'k8s'}")
    return report


def measure(cfg: DictConfig) -> dict[str, Any]:
    """Start ``recipes.serve`` on loopback, ramp an open-loop load, write ``capacity.json``."""
    from mlcost_pl.autoscale.capacity import write_json
    from mlcost_pl.autoscale.measure import RampSettings, measure_server
    from mlcost_pl.summary import print_summary

    if not cfg.get("model_dir"):
        raise UserInputError("model_dir is required: model_dir=<the folder recipes.export wrote>")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    m = cfg.measure
    settings = RampSettings(slo_ms=float(cfg.serve.slo_ms), start_rps=float(m.start_rps), growth=float(m.growth),
                            step_s=float(m.step_s), refine_steps=int(m.refine_steps), max_s=float(m.max_s),
                            max_requests=int(m.max_requests), max_error_share=float(m.max_error_share),
                            min_step_requests=int(m.min_step_requests))
    capacity = measure_server(str(cfg.model_dir), settings, server_args=list(m.server_args),
                              startup_timeout_s=float(m.startup_timeout_s))
    path = write_json(capacity.to_dict(), str(m.out))
    print_summary("mlcost_pl autoscale measure", [
        ("model", f"{capacity.model_dir} (version {capacity.model_version[:12]})"),
        ("capacity at the SLO", f"{capacity.rps:.1f} requests/s per replica, p99 <= {capacity.slo_ms:g} ms"),
        ("CPU at capacity", f"{capacity.cpu_utilization_at_capacity:.0f} % of one core"),
        ("saturation", f"{capacity.saturation_rps:.1f} requests/s"),
        ("start-up", f"{capacity.startup_s:.1f} s to ready"),
        ("wrote", str(path)),
        ("plan with", f"python -m recipes.autoscale plan capacity={path} trace=diurnal"),
    ])
    return capacity.to_dict()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Dispatch ``cfg.command``."""
    if cfg.command not in COMMANDS:
        raise UserInputError(f"command must be one of {', '.join(COMMANDS)}, got {cfg.command!r}")
    return plan(cfg) if cfg.command == "plan" else measure(cfg)


@hydra.main(version_base="1.3", config_path="../configs", config_name="autoscale")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_cli(run, cfg)


if __name__ == "__main__":
    sys.argv = positional_command(sys.argv, COMMANDS)
    main()
