"""A 2-node loopback run vs a 1-process run of the recipe, and accuracy with each comm hook: ``uv run python -m bench.multinode [--quick]``.

Every run is ``recipes.train experiment=digits_fast`` (tiny CNN, bundled digits, 16x16, 10 epochs) with the same global
batch of 128, in fresh processes:

* ``1 process``: ``data.batch_size=64`` with accumulation 2 (``trainer=ddp_multinode +global_batch_size=128``);
* ``2 nodes``: two torchrun agents on 127.0.0.1 (c10d rendezvous, gloo, one process each: accumulation 1), with
  ``trainer.strategy.comm_hook`` = ``none``, ``bf16``, ``fp16`` and ``powersgd`` (rank 2, from step 10).

Final train loss, test accuracy and fit wall time come from each run's cost-ledger row. Repeats interleave the
configurations; medians are printed. Process start-up (importing Lightning) is not in the fit time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.comm_hooks import free_port

ROOT = Path(__file__).resolve().parents[1]
BASE = ["trainer=ddp_multinode", "experiment=digits_fast", "+global_batch_size=128", "trainer.enable_progress_bar=false",
        "callbacks.lr_monitor=null", "callbacks.spot_checkpoint.every_n_steps=null", "callbacks.spot_checkpoint.every_seconds=null"]


def _ledger_row(ledger: Path) -> dict:
    from mlcost_pl.cost.ledger import open_ledger

    rows = open_ledger(str(ledger)).rows()
    assert rows, f"no ledger row in {ledger}"
    return rows[-1]["metrics"]


def run_recipe(tmp: Path, name: str, overrides: list[str], nodes: int, timeout: float = 1800) -> dict[str, float]:
    """Run the recipe on 1 process or ``nodes`` loopback torchrun agents; return its final metrics (ledger row)."""
    ledger = tmp / f"{name}.jsonl"
    args = [*BASE, *overrides, f"paths.log_dir={tmp / name}", f"callbacks.cost_monitor.ledger={ledger}", f"run_name={name}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    start = time.perf_counter()
    if nodes == 1:
        subprocess.run([sys.executable, "-m", "recipes.train", *args], cwd=ROOT, env=env, check=True, capture_output=True, timeout=timeout)
    else:
        port = free_port()
        procs = []
        for node in range(nodes):
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", "--nproc-per-node=1", "--rdzv-backend=c10d",
                   f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={name}", f"--rdzv-conf=is_host={int(node == 0)}",
                   "-m", "recipes.train", *args]
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            if node == 0:
                time.sleep(1.0)
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            if p.returncode:
                raise RuntimeError(f"{name}: agent exited {p.returncode}: {err.decode()[-2000:]}")
    metrics = _ledger_row(ledger)
    metrics["process_wall_s"] = time.perf_counter() - start
    return metrics


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, hooks none and bf16 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hooks", nargs="+", default=None, choices=["none", "bf16", "fp16", "powersgd"])
    args = parser.parse_args(argv)
    hooks = args.hooks or (["none", "bf16"] if args.quick else ["none", "bf16", "fp16", "powersgd"])
    repeats = 1 if args.quick else args.repeats
    configs = {"1 process": ([], 1)}
    for hook in hooks:
        extra = ["trainer.strategy.powersgd_start_iter=10"] if hook == "powersgd" else []
        configs[f"2 nodes, comm_hook={hook}"] = ([f"trainer.strategy.comm_hook={hook}", *extra], 2)
    results: dict[str, list[dict[str, float]]] = {k: [] for k in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for i, (label, (overrides, nodes)) in enumerate(configs.items()):
                results[label].append(run_recipe(Path(tmp), f"r{rep}-{i}", overrides, nodes))
    print(f"recipes.train experiment=digits_fast, global batch 128, 10 epochs; {repeats} repeat(s), medians")
    print(f"{'run':<32} {'train loss':>10} {'val loss':>9} {'test acc':>9} {'fit s':>7} {'process s':>10}")
    summary = {}
    for label, runs in results.items():
        med = {k: statistics.median(r.get(k, float("nan")) for r in runs) for k in ("train/loss", "val/loss", "test/acc", "time/fit_s", "process_wall_s")}
        summary[label] = med
        print(f"{label:<32} {med['train/loss']:>10.4f} {med['val/loss']:>9.4f} {med['test/acc']:>9.4f} {med['time/fit_s']:>7.1f} {med['process_wall_s']:>10.1f}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
