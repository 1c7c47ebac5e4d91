"""Storage lifecycle: ``uv run python -m recipes.storage report|plan|apply url=s3://bucket/prefix [rules=mlcost] ...``.

Reads top to bottom: load prices, scan the URL, classify and price it (report); expand and check the rules, simulate
them for 12 months, write the plot (plan); merge them with the bucket's lifecycle configuration and, only with
``apply.confirm=true``, put it through the cloud's API (apply). Nothing here deletes or moves an object.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlcost_pl.config import register_resolvers
from mlcost_pl.errors import UserInputError
from mlcost_pl.storage import (
    GROUPS,
    StoragePrices,
    apply_s3,
    check_live_checkpoints,
    check_overlaps,
    classify,
    expand,
    merge_s3,
    parse_rules,
    plot_cumulative,
    price_groups,
    read_s3_rules,
    s3_client,
    scan,
    simulate,
    to_azure,
    to_gcs,
    to_s3,
)
from mlcost_pl.utils.fs import is_local, local_path, write_atomic
from recipes._cli import positional_command, run_cli

register_resolvers()

COMMANDS = ("report", "plan", "apply")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _write(out: str, name: str, data: bytes) -> str:
    """``out/name`` all-or-nothing (:func:`mlcost_pl.utils.fs.write_atomic`); returns where it went."""
    url = f"{out.rstrip('/')}/{name}"
    write_atomic(url, data)
    return local_path(url) if is_local(url) else url


def _usd(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.2f}"
    return f"{x:.4f}" if abs(x) >= 0.01 or x == 0 else f"{x:.2e}"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000
    return str(n)


def storage(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.command`` (report, plan or apply) on ``cfg.url``; return what it printed, as data."""
    from rich.console import Console
    from rich.table import Table

    if cfg.command not in COMMANDS:
        raise UserInputError(f"command must be one of {', '.join(COMMANDS)}, got {cfg.command!r}")
    console = Console(width=160)
    prices = StoragePrices.load(_plain(cfg.prices), cfg.prices_file)
    inventory = scan(str(cfg.url), _plain(cfg.storage_options))
    provider = prices.provider(cfg.provider or inventory.provider or "aws")
    if cfg.age_days is not None or cfg.ages:
        ages = {str(k): float(v) for k, v in (_plain(cfg.ages) or {}).items()}
        inventory = inventory.with_ages(ages if cfg.age_days is None else {"": float(cfg.age_days), **ages})
    classified = classify(inventory, keep_last=cfg.keep_last, live_days=cfg.live_days)
    groups = price_groups(classified, provider)
    out_dir = str(cfg.out) if cfg.out else None

    # ---------------------------------------------------------------- report
    table = Table(title=f"storage report: {inventory.url} ({provider.name} prices as of {prices.as_of})", title_justify="left")
    for column in ("group", "objects", "bytes", "size", "$/month", "classes"):
        table.add_column(column, justify="left" if column in ("group", "classes") else "right")
    for name in (*GROUPS, "total"):
        row = groups[name]
        if row["objects"] or name == "total":
            classes = ", ".join(f"{c} {_size(b)}" for c, b in sorted(row["classes"].items()))
            table.add_row(name, f"{row['objects']:,}", f"{row['bytes']:,}", _size(row["bytes"]), _usd(row["usd_per_month"]), classes)
    console.print(table)
    for run in classified.runs:
        newest = run.newest_committed
        console.print(f"checkpoints {run.prefix or './'}: {len(run.folders)} folder(s), newest committed "
                      f"{newest.name if newest else 'none'}, {'live' if run.live else 'idle'}; "
                      + ", ".join(f"{f.name}={f.group}" for f in run.folders))
    report = {"url": inventory.url, "provider": provider.name, "prices_as_of": prices.as_of, "keep_last": cfg.keep_last,
              "groups": {k: {"objects": v["objects"], "bytes": v["bytes"], "usd_per_month": v["usd_per_month"],
                             "classes": v["classes"]} for k, v in groups.items()}}
    result: dict[str, Any] = {"report": report}
    if out_dir:
        console.print(f"wrote {_write(out_dir, 'report.json', json.dumps(report, indent=2).encode())}")
    if cfg.command == "report":
        return result

    # ---------------------------------------------------------------- plan
    specs = parse_rules(_plain(cfg.rules), provider)
    rules = expand(specs, classified)
    check_overlaps(rules)
    check_live_checkpoints(rules, classified)
    plan = simulate(classified, rules, provider, months=cfg.months, reads=_plain(cfg.reads))
    summary = Table(title=f"plan: {len(specs)} rule(s) -> {len(rules)} lifecycle rule(s), {plan.months} months", title_justify="left")
    for column in ("", "$/month now", f"$/month in month {plan.months}", f"{plan.months}-month total", "saved"):
        summary.add_column(column, justify="left" if not column else "right")
    summary.add_row("without rules", _usd(plan.baseline[0]), _usd(plan.baseline[-1]), _usd(plan.baseline_total), "")
    summary.add_row("with rules", _usd(plan.with_rules[0]), _usd(plan.with_rules[-1]), _usd(plan.with_rules_total),
                    f"{_usd(plan.saving_total)} ({plan.saving_total / plan.baseline_total:.1%})" if plan.baseline_total else "")
    console.print(summary)
    per_rule = Table(title="per rule: with it minus without it, over the horizon (negative = saves)", title_justify="left")
    for column in ("rule", "objects", "size", "storage", "transitions", "min duration", "retrieval", "net", ""):
        per_rule.add_column(column, justify="left" if column in ("rule", "") else "right")
    for impact in plan.rules:
        flag = "COSTS MORE THAN IT SAVES" if impact.costs_more else ""
        per_rule.add_row(impact.name, f"{impact.objects:,}", _size(impact.bytes), *(_usd(impact.delta[c]) for c in
                         ("storage", "transitions", "min_duration", "retrieval")), _usd(impact.net_usd), flag)
    console.print(per_rule)
    plan_dir = out_dir or str(cfg.paths.output_dir)
    result["plan"] = plan.to_dict()
    console.print(f"wrote {_write(plan_dir, 'plan.json', json.dumps(result['plan'], indent=2).encode())}")
    png = plot_cumulative(plan, title=f"{inventory.url}: cumulative storage cost")
    result["plot"] = _write(plan_dir, "plan.png", png)
    console.print(f"wrote {result['plot']}")
    if cfg.command == "plan":
        return result

    # ---------------------------------------------------------------- apply
    costlier = [r for r in plan.rules if r.costs_more]
    if costlier and not cfg.apply.allow_costlier:
        raise UserInputError(f"rule(s) {', '.join(r.name for r in costlier)} cost more than they save over {plan.months} months "
                         f"(see the plan); drop them or pass apply.allow_costlier=true")
    if provider.name == "aws" and inventory.provider == "aws":
        client = s3_client(_plain(cfg.storage_options))
        merged = merge_s3(read_s3_rules(client, inventory.bucket), rules, inventory.key_prefix)
        console.print(f"bucket {inventory.bucket}: keep {len(merged.kept)} rule(s) {merged.kept}, replace {len(merged.replaced)} "
                      f"written by a previous apply, add {len(merged.added)}")
        console.print_json(json.dumps({"Rules": merged.rules}))
        applied = apply_s3(client, inventory.bucket, merged, confirm=bool(cfg.apply.confirm))
        result["apply"] = {"rules": merged.rules, "kept": merged.kept, "replaced": merged.replaced, "added": merged.added,
                           "applied": applied is not None, "bucket_rules": applied}
        console.print(f"applied: the bucket now has {len(applied)} lifecycle rule(s)" if applied is not None
                      else "dry run: nothing applied (apply.confirm=true puts this configuration)")
        return result
    if cfg.apply.confirm:
        raise UserInputError(f"apply.confirm=true puts S3 lifecycle configurations only; for {inventory.url} ({provider.name}) "
                         f"apply the printed policy with the cloud's CLI (drop apply.confirm to print it)")
    if provider.name == "gcp":
        policy = to_gcs(rules, provider, inventory.key_prefix)
        how = f"gcloud storage buckets update gs://{inventory.bucket or '<bucket>'} --lifecycle-file=lifecycle.json"
    elif provider.name == "azure":
        policy = to_azure(rules, provider, inventory.bucket, inventory.key_prefix)
        how = "az storage account management-policy create --account-name <account> -g <group> --policy @policy.json"
    else:
        policy = {"Rules": to_s3(rules, inventory.key_prefix)}
        how = "aws s3api put-bucket-lifecycle-configuration --bucket <bucket> --lifecycle-configuration file://lifecycle.json"
    console.print_json(json.dumps(policy))
    console.print(f"dry run: nothing applied; apply it with: {how}")
    result["apply"] = {"policy": policy, "applied": False}
    return result


@hydra.main(version_base="1.3", config_path="../configs", config_name="storage")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    run_cli(storage, cfg)


if __name__ == "__main__":
    sys.argv = positional_command(sys.argv, COMMANDS)
    main()
