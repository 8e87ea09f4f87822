"""Kubernetes manifests for a served path or a bundle: plain dicts, written
as YAML by :func:`berth.deploy.dump` (docs/deploy.md).

What is rendered: a ConfigMap (the server-level berth.yaml), a Deployment
(probes on Berth's health endpoints and gRPC health service, a preStop pause
then SIGTERM drain within the grace period, a non-root read-only container),
a Service (REST and gRPC), a PodDisruptionBudget and an autoscaler: a
HorizontalPodAutoscaler on Berth's in-flight requests (a Pods metric served
by a custom-metrics adapter), a KEDA ScaledObject with a Prometheus trigger,
or none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..build import GRPC_PORT, HTTP_PORT, IMAGE_UID
from ..errors import ConfigError

__all__ = ["AUTOSCALERS", "INFLIGHT_METRIC", "KubeOptions", "render"]

AUTOSCALERS = ("hpa", "keda", "none")
#: The Berth metric the autoscalers follow (docs/metrics.md): requests
#: accepted and not yet answered, per model version.
INFLIGHT_METRIC = "berth_inflight_requests"
#: Seconds the pod keeps serving after it is told to stop, so that Services
#: and load balancers take it out of rotation before the drain starts.
PRESTOP_PAUSE_S = 5
#: Slack on top of the pause and the drain before Kubernetes sends SIGKILL
#: (workers are stopped with TERM, a wait, then KILL).
GRACE_SLACK_S = 10
CONFIG_MOUNT = "/etc/berth"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


@dataclass
class KubeOptions:
    """What ``berth deploy kubernetes`` renders from."""

    name: str
    image: str
    namespace: str | None = None
    replicas: int = 1
    max_replicas: int = 10
    autoscaler: str = "hpa"
    target_inflight: int = 8
    prometheus_url: str = "http://prometheus.monitoring.svc:9090"
    gpus: int = 0
    resources: dict[str, Any] = field(default_factory=dict)
    drain_timeout_s: float = 30
    config_yaml: str = ""
    models: list[str] = field(default_factory=list)


def check_name(value: str, what: str = "--name") -> str:
    """A DNS-1123 label, as Kubernetes object names must be."""
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ConfigError(
            f"{what} {value!r}: Kubernetes names are lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


def _check_resources(resources: Any) -> dict[str, Any]:
    if not isinstance(resources, dict):
        raise ConfigError("deploy.resources: expected a mapping with requests and/or limits")
    out: dict[str, Any] = {}
    for part, values in resources.items():
        if part not in ("requests", "limits") or not isinstance(values, dict):
            raise ConfigError(
                f"deploy.resources.{part}: expected requests: or limits: mappings of "
                "cpu/memory quantities, e.g. requests: {cpu: '2', memory: 4Gi}"
            )
        for key, quantity in values.items():
            if not _QUANTITY.match(str(quantity)):
                raise ConfigError(
                    f"deploy.resources.{part}.{key}: {quantity!r} is not a Kubernetes quantity "
                    "(e.g. 500m, 2, 4Gi)"
                )
        out[part] = {str(k): str(v) for k, v in values.items()}
    return out


def _labels(opts: KubeOptions) -> dict[str, str]:
    return {"app.kubernetes.io/name": "berth", "app.kubernetes.io/instance": opts.name}


def _meta(opts: KubeOptions, name: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name or opts.name,
        "labels": {**_labels(opts), "app.kubernetes.io/managed-by": "berth"},
    }
    if opts.namespace:
        meta["namespace"] = opts.namespace
    return meta


def grace_period(drain_timeout_s: float) -> int:
    """``terminationGracePeriodSeconds``: the preStop pause, then Berth's
    drain (``server.drain_timeout_s``), then slack."""
    return PRESTOP_PAUSE_S + int(-(-drain_timeout_s // 1)) + GRACE_SLACK_S


def _container(opts: KubeOptions) -> dict[str, Any]:
    resources = _check_resources(opts.resources) if opts.resources else {}
    if opts.gpus:
        for part in ("requests", "limits"):
            resources.setdefault(part, {})["nvidia.com/gpu"] = str(opts.gpus)
    http = {"path": "/v2/health/ready", "port": "http"}
    return {
        "name": "berth",
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--config", f"{CONFIG_MOUNT}/berth.yaml"],
        "env": [
            {"name": "BERTH_HOST", "value": "0.0.0.0"},
            # Kubernetes' probes and clients name the pod IP in Host.
            {"name": "BERTH_ALLOWED_HOSTS", "value": "*"},
            {"name": "BERTH_LOG_FORMAT", "value": "json"},
        ],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "resources": resources,
        # Starts when the gRPC health service answers SERVING for the
        # server (service name ""), then the HTTP probes take over.
        "startupProbe": {
            "grpc": {"port": GRPC_PORT, "service": ""},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": http,
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 2,
        },
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_PAUSE_S)]}}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def deployment(opts: KubeOptions) -> dict[str, Any]:
    pod_meta = {
        "labels": _labels(opts),
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(HTTP_PORT),
            "prometheus.io/path": "/metrics",
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(opts),
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": _labels(opts)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": pod_meta,
                "spec": {
                    "terminationGracePeriodSeconds": grace_period(opts.drain_timeout_s),
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": IMAGE_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_container(opts)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": f"{opts.name}-config"}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def service(opts: KubeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(opts),
        "spec": {
            "selector": _labels(opts),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http",
                 "protocol": "TCP", "appProtocol": "http"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc",
                 "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
            ],
        },
    }


def config_map(opts: KubeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(opts, f"{opts.name}-config"),
        "data": {"berth.yaml": opts.config_yaml},
    }


def disruption_budget(opts: KubeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(opts),
        # One pod at a time: node drains proceed even with one replica,
        # and never take several replicas down at once.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _labels(opts)}},
    }


def hpa(opts: KubeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(opts),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": opts.name},
            "minReplicas": opts.replicas,
            "maxReplicas": opts.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": INFLIGHT_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(opts.target_inflight),
                        },
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }


def scaled_object(opts: KubeOptions) -> dict[str, Any]:
    where = f'namespace="{opts.namespace}",' if opts.namespace else ""
    query = f'sum({INFLIGHT_METRIC}{{{where}pod=~"{opts.name}-.*"}})'
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(opts),
        "spec": {
            "scaleTargetRef": {"name": opts.name},
            "minReplicaCount": opts.replicas,
            "maxReplicaCount": opts.max_replicas,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": opts.prometheus_url,
                        "query": query,
                        "threshold": str(opts.target_inflight),
                    },
                }
            ],
        },
    }


def render(opts: KubeOptions) -> list[dict[str, Any]]:
    """The manifests, in the order ``kubectl apply`` wants them."""
    check_name(opts.name)
    if opts.namespace:
        check_name(opts.namespace, "--namespace")
    if opts.autoscaler not in AUTOSCALERS:
        raise ConfigError(
            f"--autoscaler {opts.autoscaler!r}: expected one of {', '.join(AUTOSCALERS)}"
        )
    if opts.max_replicas < opts.replicas:
        raise ConfigError(
            f"--max-replicas {opts.max_replicas} is below --replicas {opts.replicas}"
        )
    docs = [config_map(opts), deployment(opts), service(opts), disruption_budget(opts)]
    if opts.autoscaler == "hpa":
        docs.append(hpa(opts))
    elif opts.autoscaler == "keda":
        docs.append(scaled_object(opts))
    return docs

