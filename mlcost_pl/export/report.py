"""Latency, cost, hashes and the report files of an export: pure helpers, no Lightning."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlcost_pl.errors import UserInputError

MANIFEST = "manifest.json"


def latency_ms(fn: Callable[[], Any], iters: int = 20, warmup: int = 3) -> dict[str, float]:
    """p50/p99/mean wall time of ``fn()`` in milliseconds over ``iters`` calls after ``warmup`` calls."""
    if iters < 1:
        raise UserInputError(f"export.latency_iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    arr = np.asarray(times)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()),
            "iters": iters}


def usd_per_million(p50_ms: float, batch: int, price_per_hour: float) -> float:
    """Dollars per million predictions when one instance serves back-to-back batches of ``batch`` at ``p50_ms``.

    Example:
        >>> round(usd_per_million(10.0, 8, 3.6), 4)  # 1.25 ms/prediction at $0.001/s
        1.25
    """
    if batch < 1 or price_per_hour < 0:
        raise UserInputError(f"batch must be >= 1 and export.price_per_hour >= 0, got {batch}, {price_per_hour}")
    return price_per_hour / 3600.0 * (p50_ms / 1e3) / batch * 1e6


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Hash every file in ``folder`` (except the manifest) into ``manifest.json``; return the entries."""
    folder = Path(folder)
    entries = {
        p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return entries


def check_manifest(folder: str | Path) -> list[str]:
    """Problems found re-hashing ``folder`` against its manifest (empty when everything matches)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        return [f"{path}: no manifest"]
    entries = json.loads(path.read_text())
    problems = []
    for name, entry in entries.items():
        f = folder / name
        if not f.exists():
            problems.append(f"{name}: missing")
        elif sha256_file(f) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest (modified after export)")
    extra = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - set(entries) - {MANIFEST}
    problems += [f"{name}: not in the manifest" for name in sorted(extra)]
    return problems


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def verify_command(out_dir: str | Path) -> str:
    """The command that re-checks the export in ``out_dir``, quoted so it runs when pasted into a shell.

    The path is quoted for Hydra's override grammar when it holds characters outside ``[A-Za-z0-9_.+/-]``, then the
    argument is quoted for the shell.

    Examples:
        >>> verify_command("outputs/export/ckpt_path-outputs_train_default_checkpoints/model")
        'uv run python -m recipes.export verify=outputs/export/ckpt_path-outputs_train_default_checkpoints/model'
        >>> print(verify_command("/tmp/my exports/a=b"))
        uv run python -m recipes.export 'verify='"'"'/tmp/my exports/a=b'"'"''
    """
    value = str(out_dir)
    if not re.fullmatch(r"[A-Za-z0-9_.+/-]+", value):
        value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"uv run python -m recipes.export {shlex.quote('verify=' + value)}"


def render_markdown(report: dict[str, Any], batch_sizes: Sequence[int]) -> str:
    """``report.md``: the figures of ``report.json`` as tables."""
    lines = ["# Export report", "", f"Source: `{report.get('source', {}).get('ckpt_path') or 'python'}`  ",
             f"Created: {report['created']}  ", f"CPU: {', '.join(report['cpu']['flags']) or report['cpu']['machine']}",
             "", "## Variants", "",
             "| variant | file | MB | " + " | ".join(f"p50/p99 ms @{b}" for b in batch_sizes)
             + f" | {report['gate']['metric'] if report.get('gate') else 'metric'} | $ / 1M predictions |",
             "| --- | --- | --- | " + " | ".join("---" for _ in batch_sizes) + " | --- | --- |"]
    for name, v in report["variants"].items():
        lat = " | ".join(f"{_fmt(v['latency_ms'][str(b)]['p50'], 2)} / {_fmt(v['latency_ms'][str(b)]['p99'], 2)}"
                         for b in batch_sizes)
        mb = _fmt(v["bytes"] / 1e6, 3) if v.get("bytes") else "-"
        lines.append(f"| {name} | {v.get('file') or '-'} | {mb} | {lat} | {_fmt(v.get('metric'), 4)} | "
                     f"{_fmt(v.get('usd_per_million'), 4)} |")
    cost = report["cost"]
    lines += ["", f"Cost: ${cost['price_per_hour']}/hour instance, back-to-back batches of {cost['batch']} at p50 "
              "latency, one model per instance.", ""]
    p = report["parity"]
    lines += ["## fp32 parity (ONNX Runtime vs PyTorch)", "",
              f"{p['samples']} validation samples: max abs diff {_fmt(p['max_abs'])}, max rel diff {_fmt(p['max_rel'])}, "
              f"mean abs diff {_fmt(p['mean_abs'])} (tolerance atol={p['atol']}, rtol={p['rtol']}).", ""]
    q = report.get("quantization")
    if q:
        lines += ["## Quantization", "", f"Mode `{q['mode']}`: activations {q['activation_type']}, weights "
                  f"{q['weight_type']} (per-channel: {q['per_channel']}, reduce_range: {q['reduce_range']}). "
                  f"Why: {q['reason']}. Calibration: {q.get('calibration_samples', '-')} training samples.", ""]
        for w in q.get("warnings", []):
            lines.append(f"> warning: {w}")
    g = report.get("gate")
    if g:
        lines += ["", "## Accuracy gate", "",
                  f"{g['metric']}: fp32 {_fmt(g['fp32'], 4)}, quantized {_fmt(g['quantized'], 4)}, drop {_fmt(g['drop'], 4)} "
                  f"(max {g['max_drop']}): **{'passed' if g['passed'] else 'failed'}** after {len(g['attempts'])} attempt(s).", ""]
        if g["kept_fp32"]:
            lines += ["Layers kept in fp32:", ""] + [f"- `{k['name']}` ({k['op']}): {k['reason']}" for k in g["kept_fp32"]]
        else:
            lines.append("No layer had to be kept in fp32.")
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "| --- | --- | --- |"]
    lines += [f"| {n} | {e['bytes']} | `{e['sha256'][:16]}...` |" for n, e in report["files"].items()]
    command = report.get("verify_command") or "uv run python -m recipes.export verify=<this folder>"
    lines += ["", f"Re-check (from the folder the export was run in): `{command}`", ""]
    return "\n".join(lines)
