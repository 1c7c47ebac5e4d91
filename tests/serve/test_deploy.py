"""Kubernetes manifests: validated against the Kubernetes schemas (kubernetes-validate, no network) and KEDA's."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlcost_pl.serve.deploy import DeploySettings, k8s_manifests, write_k8s_manifests

K8S_VERSION = "1.30.0"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda_scaledobject.schema.json").read_text())


@pytest.mark.parametrize("settings", [DeploySettings(), DeploySettings(name="digits", min_replicas=1, max_replicas=4,
                                                                      in_flight_target=2.5, cpu="500m")])
def test_every_manifest_validates_against_its_schema(settings):
    manifests = k8s_manifests(settings)
    for name, manifest in manifests.items():
        if manifest["kind"] == "ScaledObject":
            jsonschema.validate(manifest, KEDA_SCHEMA)  # KEDA's CRD: our schema from its documented fields
        else:
            kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_defaults_follow_the_classic_cost_recipe():
    m = k8s_manifests(DeploySettings())
    spec = m["hpa.yaml"]["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 20)
    cpu, pods = spec["metrics"]
    assert cpu["resource"]["target"]["averageUtilization"] == 70
    assert pods["pods"]["metric"]["name"] == "serve_in_flight_requests" and pods["pods"]["target"]["averageValue"] == "8"
    down = spec["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 300 and down["policies"] == [
        {"type": "Percent", "value": 50, "periodSeconds": 60}]
    pod = m["deployment.yaml"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["terminationGracePeriodSeconds"] > 30 + int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert "serve.drain_seconds=30" in container["command"]
    keda = m["keda-scaledobject.yaml"]["spec"]
    assert keda["minReplicaCount"] == 0 and keda["triggers"][0]["type"] == "prometheus"


def test_write_k8s_manifests_writes_yaml_and_a_dockerfile(tmp_path):
    paths = write_k8s_manifests(DeploySettings(image="reg/x:1"), tmp_path / "k8s")
    assert sorted(p.name for p in paths) == ["Dockerfile", "deployment.yaml", "hpa.yaml", "keda-scaledobject.yaml",
                                             "service.yaml"]
    assert not list((tmp_path / "k8s").glob(".*"))  # no temporary files left
    assert yaml.safe_load((tmp_path / "k8s" / "deployment.yaml").read_text())["spec"]["template"]["spec"][
        "containers"][0]["image"] == "reg/x:1"
    docker = (tmp_path / "k8s" / "Dockerfile").read_text()
    assert "STOPSIGNAL SIGTERM" in docker and '"recipes.serve"' in docker


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "Bad_Name"}, "deploy.name"),
    ({"max_replicas": 1, "min_replicas": 2}, "deploy.max_replicas"),
    ({"cpu_target_utilization": 0}, "deploy.cpu_target_utilization"),
    ({"in_flight_target": 0}, "deploy.in_flight_target"),
])
def test_bad_settings_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeploySettings(**kwargs)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['nope'\]"):
        DeploySettings.from_dict({"nope": 1})
