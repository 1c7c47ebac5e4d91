"""The cluster manifests: JobSet and SkyPilot YAMLs against their schemas, the SLURM launcher config as sbatch."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlcost_pl.cost.catalog import PriceCatalog
from mlcost_pl.distributed.elastic import accumulation_for
from mlcost_pl.preemption.restart import PREEMPTED_EXIT_CODE
from tests.helpers.cfg import compose_cfg

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cluster"
K8S_VERSION = "1.30.0"


def _schema(name: str) -> dict:
    return json.loads((EXAMPLES / "schemas" / name).read_text())


def _override(args: str, key: str) -> str:
    match = re.search(rf"{re.escape(key)}=\"?([^\s\"']+)", args)
    assert match, f"{key} missing from: {args}"
    return match.group(1)


def _check_global_batch(args: str, world_sizes: range) -> None:
    global_batch, batch = int(_override(args, "+global_batch_size")), int(_override(args, "data.batch_size"))
    for world in world_sizes:
        accumulation_for(global_batch, batch, world)  # raises when a world size in the range cannot keep it


def test_jobset_validates_against_its_crd_schema_and_jobs_against_kubernetes():
    doc = yaml.safe_load((EXAMPLES / "jobset.yaml").read_text())
    jsonschema.validate(doc, _schema("jobset-v1alpha2.schema.json"))
    jobs = {rj["name"]: rj for rj in doc["spec"]["replicatedJobs"]}
    for name, rj in jobs.items():
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"{doc['metadata']['name']}-{name}-0"}, "spec": rj["template"]["spec"]}
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    head, workers = (jobs[n]["template"]["spec"] for n in ("head", "workers"))
    # the rendezvous host is on-demand; the workers are spot and restart on the preemption exit code
    assert "gke-spot" not in json.dumps(head["template"]["spec"].get("nodeSelector", {}))
    assert workers["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    rule = workers["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "Ignore" and rule["onExitCodes"]["values"] == [PREEMPTED_EXIT_CODE]
    container = workers["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    host = f"{doc['metadata']['name']}-head-0-0.{doc['spec']['network']['subdomain']}"
    assert env["RDZV_ENDPOINT"].startswith(host + ":") and env["IS_HOST"] == "0"
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
    assert {e["name"]: e["value"] for e in head["template"]["spec"]["containers"][0]["env"]}["IS_HOST"] == "1"
    args = container["args"][0]
    assert "trainer=ddp_multinode" in args and "--rdzv-backend=c10d" in args and env["CKPT_URL"].startswith("gs://")
    nnodes = _override(args, "--nnodes")
    lo, hi = (int(x) for x in nnodes.split(":"))
    _check_global_batch(args, range(lo, hi + 1))
    PriceCatalog.bundled().lookup(_override(args, "callbacks.cost_monitor.instance"))  # priced by the catalog


def test_jobset_schema_rejects_what_the_crd_rejects():
    doc = yaml.safe_load((EXAMPLES / "jobset.yaml").read_text())
    doc["spec"]["failurePolicy"]["maxRestart"] = 3  # typo: unknown field
    with pytest.raises(jsonschema.ValidationError, match="maxRestart"):
        jsonschema.validate(doc, _schema("jobset-v1alpha2.schema.json"))
    doc = yaml.safe_load((EXAMPLES / "jobset.yaml").read_text())
    doc["spec"]["failurePolicy"]["rules"][0]["action"] = "Restart"
    with pytest.raises(jsonschema.ValidationError, match="Restart"):
        jsonschema.validate(doc, _schema("jobset-v1alpha2.schema.json"))


def test_skypilot_multinode_validates_and_uses_node_rank_and_ips():
    doc = yaml.safe_load((EXAMPLES / "skypilot-multinode.yaml").read_text())
    jsonschema.validate(doc, _schema("skypilot-task.schema.json"))
    run = doc["run"]
    for var in ("SKYPILOT_NODE_RANK", "SKYPILOT_NODE_IPS", "SKYPILOT_NUM_NODES", "SKYPILOT_NUM_GPUS_PER_NODE"):
        assert f"${var}" in run or f"${{{var}}}" in run or f'"${var}"' in run, var
    assert doc["resources"]["use_spot"] is True and doc["envs"]["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == 1
    assert PREEMPTED_EXIT_CODE in doc["resources"]["job_recovery"]["recover_on_exit_codes"]
    args = run.replace('"$GLOBAL_BATCH_SIZE"', str(doc["envs"]["GLOBAL_BATCH_SIZE"]))
    _check_global_batch(args, range(doc["num_nodes"], doc["num_nodes"] + 1))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "resources": {**doc["resources"], "use_spots": True}}, _schema("skypilot-task.schema.json"))


@pytest.mark.parametrize("launcher", ["slurm_spot", "local_spot"])
def test_submitit_launcher_configs_compose(launcher, tmp_path):
    cfg = compose_cfg("train", [f"hydra/launcher={launcher}", "trainer=ddp_multinode"], tmp_path)
    conf = cfg.hydra.launcher
    assert conf._target_.startswith("hydra_plugins.hydra_submitit_launcher")
    if launcher == "local_spot":
        assert conf.tasks_per_node == 2
        return
    # what submitit hands sbatch: the warning signal (USR2 before the limit) and a requeueable job
    from submitit.slurm.slurm import _make_sbatch_string  # submitit's own renderer of the #SBATCH header

    sbatch = _make_sbatch_string(command="python -m recipes.train", folder=str(tmp_path), nodes=conf.nodes, ntasks_per_node=conf.tasks_per_node,
                                 gpus_per_node=conf.gpus_per_node, time=conf.timeout_min, signal_delay_s=conf.signal_delay_s,
                                 additional_parameters=dict(conf.additional_parameters))
    assert "#SBATCH --signal=USR2@120" in sbatch and "#SBATCH --requeue" in sbatch and "#SBATCH --nodes=2" in sbatch
    assert conf.max_num_timeout > 0


def test_single_node_k8s_job_example_validates():
    kubernetes_validate.validate(yaml.safe_load((EXAMPLES / "k8s-job.yaml").read_text()), K8S_VERSION, strict=True)
