"""The storage report and lifecycle plan of a bucket holding this project's own outputs.

``uv run python -m bench.storage_report [--quick] [--workdir DIR]``

Builds, reproducibly, into a temporary folder (or ``--workdir``): ``--runs`` short training runs
(``recipes.train experiment=digits_fast``, SpotCheckpoint every 10 steps, keep_last=3, CSV logs), an export of the
first run (``recipes.export``: ONNX fp32 + INT8), and an optimized litdata dataset of the bundled digits. Uploads the
tree to a bucket on a real S3 API (moto's server on 127.0.0.1), then runs the real commands against it:

    python -m recipes.storage report url=s3://mlcost-outputs/project
    python -m recipes.storage plan url=s3://mlcost-outputs/project rules=mlcost                # ages as scanned (fresh)
    python -m recipes.storage plan url=s3://mlcost-outputs/project rules=mlcost age_days=200   # what if 200 days old

and prints per group: objects, bytes, $/month; per plan: 12-month cost without and with the rules, the saving, and
the rules flagged as costing more than they save. Nothing is written outside the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUCKET = "mlcost-outputs"


def _digits_item(index: int) -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {"index": index, "image": (digits.images[index] * 16).astype("uint8"), "label": int(digits.target[index])}


def build_outputs(root: Path, runs: int, epochs: int) -> dict[str, float]:
    """Train ``runs`` short runs, export the first, optimize a dataset; return the seconds each step took."""
    env = {**os.environ, "MLCOST_ROOT": str(root), "HYDRA_FULL_ERROR": "1"}
    timings = {}
    for i in range(runs):
        if (root / f"outputs/train/run-{i}/checkpoints/progress.json").exists():
            continue  # a --workdir built before: the step is done
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "recipes.train", "experiment=digits_fast", f"trainer.max_epochs={epochs}", f"seed={i}",
                        f"run_name=run-{i}", "callbacks.spot_checkpoint.every_n_steps=10", "trainer.enable_progress_bar=false"],
                       cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        timings[f"train run {i}"] = time.perf_counter() - start
    if not (root / "outputs/export/run-0/model/report.json").exists():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "recipes.export", f"ckpt_path={root}/outputs/train/run-0/checkpoints", "run_name=run-0",
                        "export.latency_iters=3"], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        timings["export"] = time.perf_counter() - start
    if (root / "data/digits-optimized/index.json").exists():
        return timings
    start = time.perf_counter()
    from litdata import optimize

    optimize(fn=_digits_item, inputs=list(range(1797)), output_dir=str(root / "data/digits-optimized"), chunk_bytes="64KB",
             num_workers=1, verbose=False)
    timings["litdata optimize"] = time.perf_counter() - start
    return timings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def storage_cli(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "recipes.storage", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"recipes.storage {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs x 2 epochs (default: 3 runs x 4 epochs)")
    parser.add_argument("--workdir", default=None, help="build here instead of a temporary folder (kept)")
    args = parser.parse_args()
    runs, epochs = (2, 2) if args.quick else (3, 4)

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="mlcost-storage-bench-")
    work = Path(args.workdir or tmp.name)
    project = work / "project"
    try:
        timings = build_outputs(project, runs, epochs)
        from moto.server import ThreadedMotoServer

        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            import boto3
            import s3fs

            endpoint = f"http://127.0.0.1:{port}"
            creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                         aws_secret_access_key="bench").create_bucket(Bucket=BUCKET)
            fs = s3fs.S3FileSystem(key="bench", secret="bench", client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
            fs.put(str(project), f"{BUCKET}/", recursive=True)
            env = {**os.environ, **creds, "AWS_ENDPOINT_URL": endpoint, "MLCOST_ROOT": str(work)}
            url = f"s3://{BUCKET}/project"
            start = time.perf_counter()
            print(storage_cli(["report", f"url={url}", f"out={work}/report"], env))
            timings["report"] = time.perf_counter() - start
            plans = {}
            for name, extra in (("fresh", []), ("aged 200 days", ["age_days=200"])):
                out = work / f"plan-{name.split()[0]}"
                start = time.perf_counter()
                print(storage_cli(["plan", f"url={url}", "rules=mlcost", f"out={out}", *extra], env))
                timings[f"plan ({name})"] = time.perf_counter() - start
                plans[name] = json.loads((out / "plan.json").read_text())
            report = json.loads((work / "report/report.json").read_text())
        finally:
            server.stop()
    finally:
        if tmp is not None:
            tmp.cleanup()

    print(f"\n== bucket holding this project's outputs ({runs} training runs x {epochs} epochs, 1 export, 1 litdata dataset)")
    print(f"{'group':<24}{'objects':>9}{'bytes':>14}{'$/month':>12}")
    for group, row in report["groups"].items():
        if row["objects"]:
            print(f"{group:<24}{row['objects']:>9,}{row['bytes']:>14,}{row['usd_per_month']:>12.3e}")
    for name, plan in plans.items():
        flagged = [r["name"] for r in plan["rules"] if r["costs_more_than_it_saves"]]
        saved = plan["usd_saved"] / plan["usd_total_without_rules"] if plan["usd_total_without_rules"] else 0.0
        print(f"plan ({name}): 12 months without rules ${plan['usd_total_without_rules']:.3e}, with rules "
              f"${plan['usd_total_with_rules']:.3e}: saved {saved:.1%}; costs more than it saves: {flagged or 'none'}")
        for rule in plan["rules"]:
            print(f"  {rule['name']:<24} {rule['objects']:>5} objects {rule['bytes']:>12,} B  net ${rule['net_usd']:+.3e} "
                  f"(storage {rule['delta_storage']:+.3e}, transitions {rule['delta_transitions']:+.3e}, "
                  f"min duration {rule['delta_min_duration']:+.3e})")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


if __name__ == "__main__":
    main()
