"""KServe: a ClusterServingRuntime that runs Berth for InferenceServices
whose model format Berth serves, and an example InferenceService
(docs/deploy.md). The same files ship in the repository's deploy/kserve/.

KServe's storage initializer puts the model's files in ``/mnt/models`` and
the controller replaces ``{{.Name}}`` in the runtime's arguments with the
InferenceService's name, so ``berth serve /mnt/models --name {{.Name}}``
serves the model under the name clients use. Berth speaks the Open Inference
Protocol (KServe's "v2") over REST on 8080 and gRPC on 8081.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..build import GRPC_PORT, HTTP_PORT, IMAGE_UID
from ..frameworks import FRAMEWORKS

__all__ = ["MODEL_FORMATS", "RUNTIME_NAME", "cluster_serving_runtime", "inference_service"]

RUNTIME_NAME = "berth"
#: (KServe modelFormat name, major version) pairs Berth serves.
MODEL_FORMATS: tuple[tuple[str, str], ...] = tuple(
    (f.runtime, version) for f in FRAMEWORKS for version in f.kserve_versions
)


def cluster_serving_runtime(image: str | None = None, name: str = RUNTIME_NAME) -> dict[str, Any]:
    """The ClusterServingRuntime (serving.kserve.io/v1alpha1)."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "berth"}},
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": str(HTTP_PORT),
                "prometheus.kserve.io/path": "/metrics",
            },
            "supportedModelFormats": [
                {"name": fmt, "version": version, "autoSelect": True}
                for fmt, version in MODEL_FORMATS
            ],
            "protocolVersions": ["v2", "grpc-v2"],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": image or f"berth:{__version__}",
                    "command": ["berth"],
                    "args": [
                        "serve", "/mnt/models", "--name", "{{.Name}}",
                        "--host", "0.0.0.0",
                        "--port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT),
                    ],
                    "env": [
                        {"name": "BERTH_ALLOWED_HOSTS", "value": "*"},
                        {"name": "BERTH_LOG_FORMAT", "value": "json"},
                    ],
                    # Knative routes one port: REST. For gRPC, an
                    # InferenceService names port 8081 as h2c (docs/deploy.md).
                    "ports": [{"containerPort": HTTP_PORT, "protocol": "TCP"}],
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi"},
                        "limits": {"cpu": "1", "memory": "2Gi"},
                    },
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": IMAGE_UID,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def inference_service(
    name: str = "iris",
    storage_uri: str = "pvc://models/iris",
    model_format: str = "sklearn",
    namespace: str | None = None,
    runtime: str = RUNTIME_NAME,
) -> dict[str, Any]:
    """An InferenceService (serving.kserve.io/v1beta1) served by the runtime."""
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": model_format},
                    "runtime": runtime,
                    "protocolVersion": "v2",
                    "storageUri": storage_uri,
                }
            }
        },
    }
