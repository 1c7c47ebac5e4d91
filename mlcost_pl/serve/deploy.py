"""Kubernetes manifests for ``recipes.serve``: Deployment, Service, HPA (``autoscaling/v2``), KEDA ScaledObject and a
Dockerfile. Pure Python (PyYAML only): builds plain dicts, so other modules (``mlcost_pl.autoscale``) can call it
with their own recommended values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mlcost_pl.errors import UserInputError
from mlcost_pl.utils.fs import write_atomic

IN_FLIGHT_METRIC = "serve_in_flight_requests"
PRESTOP_SLEEP_S = 5  # time for the endpoints controller to drop the pod before SIGTERM arrives


@dataclass
class DeploySettings:
    """What the manifests are generated from; the defaults are the classic cost recipe's.

    Attributes:
        name: name of the Deployment, Service, HPA and ScaledObject (a DNS-1123 label).
        image: container image holding mlcost_pl and the export (``docker build -t <image> .`` with the Dockerfile).
        model_dir: the export folder inside the image.
        port: container port the server listens on.
        cpu: CPU request and limit per replica (Kubernetes quantity, e.g. ``"1"`` or ``"500m"``).
        memory: memory request and limit per replica (e.g. ``"2Gi"``).
        min_replicas: HPA lower bound.
        max_replicas: HPA and KEDA upper bound.
        cpu_target_utilization: HPA target average CPU utilization, in percent of the request.
        scale_down_stabilization_s: HPA scale-down stabilization window.
        scale_down_percent: at most this percent of the replicas removed per ``scale_down_period_s``.
        scale_down_period_s: the period of that policy.
        in_flight_target: target in-flight requests per replica (HPA Pods metric ``serve_in_flight_requests``,
            served to the HPA by a Prometheus adapter).
        drain_seconds: the server's drain budget; ``terminationGracePeriodSeconds`` covers it plus the preStop sleep.
        keda_prometheus_url: the Prometheus KEDA queries.
        keda_threshold: KEDA's target value of the query (in-flight requests per replica).
        keda_min_replicas: KEDA's lower bound (0 scales to zero when idle).
        extra_args: extra Hydra overrides appended to the container command (``["serve.slo_ms=30"]``).

    Raises:
        ValueError: a bad value, naming the field.
    """

    name: str = "mlcost-serve"
    image: str = "mlcost-pl:latest"
    model_dir: str = "/models/export"
    port: int = 8000
    cpu: str = "1"
    memory: str = "2Gi"
    min_replicas: int = 2
    max_replicas: int = 20
    cpu_target_utilization: int = 70
    scale_down_stabilization_s: int = 300
    scale_down_percent: int = 50
    scale_down_period_s: int = 60
    in_flight_target: float = 8
    drain_seconds: int = 30
    keda_prometheus_url: str = "http://prometheus-server.monitoring.svc:9090"
    keda_threshold: float = 8
    keda_min_replicas: int = 0
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", str(self.name)):
            raise UserInputError(f"deploy.name must be a DNS-1123 label (lower-case letters, digits, '-'), got {self.name!r}")
        if not 1 <= int(self.port) <= 65535:
            raise UserInputError(f"deploy.port must be in 1..65535, got {self.port}")
        for key in ("min_replicas", "keda_min_replicas"):
            if int(getattr(self, key)) < 0:
                raise UserInputError(f"deploy.{key} must be >= 0, got {getattr(self, key)}")
        if int(self.max_replicas) < max(1, int(self.min_replicas)):
            raise UserInputError(f"deploy.max_replicas must be >= max(1, min_replicas), got {self.max_replicas}")
        if not 1 <= int(self.cpu_target_utilization) <= 100:
            raise UserInputError(f"deploy.cpu_target_utilization must be in 1..100, got {self.cpu_target_utilization}")
        if not 1 <= int(self.scale_down_percent) <= 100:
            raise UserInputError(f"deploy.scale_down_percent must be in 1..100, got {self.scale_down_percent}")
        for key in ("scale_down_stabilization_s", "scale_down_period_s", "drain_seconds"):
            if int(getattr(self, key)) < 0 or (key == "scale_down_period_s" and int(self.scale_down_period_s) < 1):
                raise UserInputError(f"deploy.{key} must be a positive number of seconds, got {getattr(self, key)}")
        for key in ("in_flight_target", "keda_threshold"):
            if float(getattr(self, key)) <= 0:
                raise UserInputError(f"deploy.{key} must be > 0, got {getattr(self, key)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DeploySettings:
        """Settings from a mapping (a Hydra ``deploy`` node), refusing unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserInputError(f"deploy: unknown setting(s) {unknown}; allowed: {', '.join(sorted(known))}")
        values = dict(values)
        if "extra_args" in values:
            values["extra_args"] = tuple(values["extra_args"] or ())
        return cls(**values)


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{int(round(float(value) * 1000))}m"


def _labels(s: DeploySettings) -> dict[str, str]:
    return {"app.kubernetes.io/name": s.name, "app.kubernetes.io/component": "serve"}


def _command(s: DeploySettings) -> list[str]:
    return ["python", "-m", "recipes.serve", f"model_dir={s.model_dir}", "host=0.0.0.0", f"port={s.port}",
            f"serve.drain_seconds={s.drain_seconds}", *s.extra_args]


def deployment(s: DeploySettings) -> dict[str, Any]:
    """The Deployment: probes on ``/ready`` and ``/health``, a preStop sleep, a grace period covering the drain."""
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": s.name, "labels": _labels(s)},
        "spec": {
            "replicas": max(1, s.min_replicas),
            "selector": {"matchLabels": _labels(s)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": _labels(s),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(s.port),
                                    "prometheus.io/path": "/metrics"},
                },
                "spec": {
                    "terminationGracePeriodSeconds": int(s.drain_seconds) + PRESTOP_SLEEP_S + 5,
                    "containers": [{
                        "name": "serve",
                        "image": s.image,
                        "command": _command(s),
                        "ports": [{"name": "http", "containerPort": int(s.port), "protocol": "TCP"}],
                        "env": [{"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/tmp/prometheus"}],
                        "resources": {"requests": {"cpu": s.cpu, "memory": s.memory},
                                      "limits": {"cpu": s.cpu, "memory": s.memory}},
                        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 90},
                        "livenessProbe": probe,
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2,
                                           "failureThreshold": 1},
                        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
                    }],
                },
            },
        },
    }


def service(s: DeploySettings) -> dict[str, Any]:
    """A ClusterIP Service in front of the Deployment."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": s.name, "labels": _labels(s)},
        "spec": {"selector": _labels(s), "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]},
    }


def hpa(s: DeploySettings) -> dict[str, Any]:
    """The ``autoscaling/v2`` HorizontalPodAutoscaler: CPU utilization plus in-flight requests per replica."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": s.name, "labels": _labels(s)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name},
            "minReplicas": max(1, int(s.min_replicas)),
            "maxReplicas": int(s.max_replicas),
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {
                    "type": "Utilization", "averageUtilization": int(s.cpu_target_utilization)}}},
                {"type": "Pods", "pods": {"metric": {"name": IN_FLIGHT_METRIC}, "target": {
                    "type": "AverageValue", "averageValue": _quantity(s.in_flight_target)}}},
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": int(s.scale_down_stabilization_s),
                    "policies": [{"type": "Percent", "value": int(s.scale_down_percent),
                                  "periodSeconds": int(s.scale_down_period_s)}],
                },
                "scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
            },
        },
    }


def scaled_object(s: DeploySettings) -> dict[str, Any]:
    """The KEDA ScaledObject alternative (use it instead of the HPA, not with it): scales on the Prometheus query of
    in-flight requests, down to ``keda_min_replicas`` (0 = scale to zero)."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": s.name, "labels": _labels(s)},
        "spec": {
            "scaleTargetRef": {"name": s.name},
            "minReplicaCount": int(s.keda_min_replicas),
            "maxReplicaCount": int(s.max_replicas),
            "pollingInterval": 15,
            "cooldownPeriod": int(s.scale_down_stabilization_s),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa(s)["spec"]["behavior"]}},
            "triggers": [{
                "type": "prometheus",
                "metadata": {
                    "serverAddress": s.keda_prometheus_url,
                    "query": f'sum({IN_FLIGHT_METRIC}{{app_kubernetes_io_name="{s.name}"}})',
                    "threshold": _quantity(s.keda_threshold),
                    "activationThreshold": "0",
                },
            }],
        },
    }


def dockerfile(s: DeploySettings) -> str:
    """A Dockerfile for the image: mlcost_pl installed, the export copied to ``model_dir``, drain on SIGTERM."""
    args = ", ".join(f'"{a}"' for a in _command(s))
    return (
        "# docker build -t {image} --build-arg EXPORT=<export folder> .\n"
        "FROM python:3.11-slim\n"
        "ARG EXPORT=export\n"
        "WORKDIR /app\n"
        "RUN pip install --no-cache-dir uv\n"
        "COPY pyproject.toml uv.lock ./\n"
        "COPY mlcost_pl ./mlcost_pl\n"
        "COPY recipes ./recipes\n"
        "COPY configs ./configs\n"
        "RUN uv pip install --system --no-cache .\n"
        "COPY ${{EXPORT}} {model_dir}\n"
        "ENV PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus\n"
        "EXPOSE {port}\n"
        "STOPSIGNAL SIGTERM\n"
        "CMD [{args}]\n"
    ).format(image=s.image, model_dir=s.model_dir, port=s.port, args=args)


def k8s_manifests(settings: DeploySettings) -> dict[str, dict[str, Any]]:
    """``{filename: manifest}`` for the Deployment, Service, HPA and KEDA ScaledObject.

    Example:
        >>> m = k8s_manifests(DeploySettings(min_replicas=3))
        >>> sorted(m)
        ['deployment.yaml', 'hpa.yaml', 'keda-scaledobject.yaml', 'service.yaml']
        >>> m["hpa.yaml"]["spec"]["minReplicas"]
        3
    """
    return {
        "deployment.yaml": deployment(settings),
        "service.yaml": service(settings),
        "hpa.yaml": hpa(settings),
        "keda-scaledobject.yaml": scaled_object(settings),
    }


def write_k8s_manifests(settings: DeploySettings, out_dir: str | Path) -> list[Path]:
    """Write :func:`k8s_manifests` as YAML files plus a ``Dockerfile`` into ``out_dir``, each atomically.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, manifest in k8s_manifests(settings).items():
        path = out / filename
        write_atomic(path, yaml.safe_dump(manifest, sort_keys=False))
        written.append(path)
    path = out / "Dockerfile"
    write_atomic(path, dockerfile(settings))
    written.append(path)
    return written


def settings_dict(settings: DeploySettings) -> dict[str, Any]:
    """The settings as a plain dict (for reports)."""
    return asdict(settings)
