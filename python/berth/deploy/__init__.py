"""``berth deploy``: render Kubernetes or KServe manifests as YAML
(docs/deploy.md)::

    berth deploy kubernetes dist/iris-1.0.0 --namespace ml --replicas 2
    berth deploy kubernetes models/ --image registry.example/iris:1 --config app.yaml -o k8s/
    berth deploy kserve --image registry.example/berth:0.1.0 -o kserve/

Manifests are plain dicts written with PyYAML: no templating engine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import kserve, kubernetes

__all__ = ["add_parser", "dump", "kube_options", "run"]


def dump(docs: Sequence[Mapping[str, Any]]) -> str:
    """Documents as one multi-document YAML stream; text of several lines
    (the ConfigMap's berth.yaml) as a literal block."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return "".join(
        "---\n" + yaml.dump(dict(d), Dumper=Dumper, sort_keys=False, default_flow_style=False)
        for d in docs
    )


def _write(docs: Sequence[Mapping[str, Any]], out: str | None) -> None:
    if out is None:
        sys.stdout.write(dump(docs))
        return
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"-o {out}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        path = folder / f"{doc['kind'].lower()}.yaml"
        path.write_text(dump([doc]), encoding="utf-8")
        print(path)


def _app_config(config: str | None) -> dict[str, Any]:
    if not config:
        return {}
    import yaml

    path = Path(config).expanduser()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"--config {config}: cannot read it: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {config}: not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"--config {config}: expected a mapping (server, log, deploy, ...)")
    return doc


def _config_yaml(app: Mapping[str, Any], drain: float) -> str:
    """The berth.yaml the ConfigMap carries: the app config's server-level
    sections (models come from the image; listen addresses from flags)."""
    import yaml

    doc = {k: v for k, v in app.items() if k not in ("models", "pipelines", "deploy")}
    server = {
        k: v for k, v in dict(doc.get("server") or {}).items()
        if k not in ("host", "http_port", "grpc_port")
    }
    server["drain_timeout_s"] = drain
    doc["server"] = server
    return "# berth.yaml rendered by berth deploy (docs/configuration.md)\n" + yaml.safe_dump(
        doc, sort_keys=True, default_flow_style=False
    )


def kube_options(ns: argparse.Namespace) -> kubernetes.KubeOptions:
    """Options for :func:`kubernetes.render` from ``berth deploy kubernetes``
    arguments: flags over the ``deploy:`` section of ``--config`` over the
    bundle's manifest."""
    from ..build import read_manifest
    from ..cli import DEFAULT_DRAIN_TIMEOUT_S, discover_models

    path = Path(ns.path).expanduser()
    if not path.exists():
        raise ConfigError(
            f"{ns.path}: no such file or folder; give a bundle from berth build, or the "
            "model path the image serves"
        )
    manifest = read_manifest(path) if path.is_dir() else None
    if manifest is not None:
        models = [f"{m['name']}:{m['version']}" for m in manifest.get("models", [])]
        default_name, default_image = manifest["name"].split("/")[-1], manifest.get("image")
    else:
        models = [f"{e['name']}:{e['version']}" for e in discover_models(ns.path)]
        default_name, default_image = path.stem if path.is_file() else path.name, None
    app = _app_config(ns.config)
    section = app.get("deploy") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"--config {ns.config}: deploy: expected a mapping")
    unknown = set(section) - {"name", "image", "namespace", "replicas", "resources", "gpus"}
    if unknown:
        raise ConfigError(
            f"--config {ns.config}: deploy: unknown key(s) {', '.join(sorted(unknown))} "
            "(allowed: gpus, image, name, namespace, replicas, resources)"
        )
    image = ns.image or section.get("image") or default_image
    if not image:
        raise ConfigError(
            f"{ns.path} is not a bundle, so the image is unknown: pass --image NAME:TAG "
            "(an image that serves this path, e.g. one built by berth build --image)"
        )
    drain = (app.get("server") or {}).get("drain_timeout_s", DEFAULT_DRAIN_TIMEOUT_S)
    if not isinstance(drain, (int, float)) or isinstance(drain, bool) or drain < 0:
        raise ConfigError(f"--config {ns.config}: server.drain_timeout_s must be seconds >= 0")
    name = ns.name or section.get("name") or _dns_name(default_name)
    replicas = ns.replicas if ns.replicas is not None else section.get("replicas", 1)
    gpus = ns.gpus if ns.gpus is not None else section.get("gpus", 0)
    for what, value in (("replicas", replicas), ("gpus", gpus)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{what}: expected an integer >= 0, got {value!r}")
    return kubernetes.KubeOptions(
        name=kubernetes.check_name(name),
        image=image,
        namespace=ns.namespace or section.get("namespace"),
        replicas=max(replicas, 1),
        max_replicas=ns.max_replicas if ns.max_replicas is not None else max(10, replicas),
        autoscaler=ns.autoscaler,
        target_inflight=ns.target_inflight,
        prometheus_url=ns.prometheus_url,
        gpus=gpus,
        resources=section.get("resources") or {},
        drain_timeout_s=drain,
        config_yaml=_config_yaml(app, drain),
        models=models,
    )


def _dns_name(value: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")[:63].strip("-") or "berth"


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {number}")
    return number


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {number}")
    return number


def add_parser(commands: Any) -> None:
    """Adds the ``deploy`` command to the ``berth`` parser's subcommands."""
    deploy = commands.add_parser(
        "deploy",
        help="render Kubernetes or KServe manifests",
        description="Render manifests as YAML (stdout, or one file per object with -o DIR). "
        "See docs/deploy.md.",
    )
    targets = deploy.add_subparsers(dest="target", metavar="TARGET", required=True)
    kube = targets.add_parser(
        "kubernetes",
        help="ConfigMap, Deployment, Service, PodDisruptionBudget and an autoscaler",
        description="Render Kubernetes manifests for a bundle (berth build) or a served path.",
    )
    kube.add_argument("path", metavar="PATH", help="a bundle folder, or what the image serves")
    kube.add_argument("--image", default=None, help="container image (default: the bundle's)")
    kube.add_argument("--name", default=None, help="object names (default: the bundle's name)")
    kube.add_argument("--namespace", default=None, help="namespace of every object")
    kube.add_argument("--replicas", type=_positive, default=None,
                      help="replicas, and the autoscaler's minimum (default 1)")
    kube.add_argument("--max-replicas", type=_positive, default=None,
                      help="the autoscaler's maximum (default 10)")
    kube.add_argument("--gpus", type=_count, default=None,
                      help="nvidia.com/gpu per pod (default 0)")
    kube.add_argument("--autoscaler", default="hpa", choices=kubernetes.AUTOSCALERS,
                      help="hpa (autoscaling/v2 on berth_inflight_requests through a "
                      "custom-metrics adapter), keda (a ScaledObject with a Prometheus "
                      "trigger) or none (default hpa)")
    kube.add_argument("--target-inflight", type=_positive, default=8,
                      help="in-flight requests per pod the autoscaler aims for (default 8)")
    kube.add_argument("--prometheus-url", default="http://prometheus.monitoring.svc:9090",
                      help="Prometheus the KEDA trigger queries")
    kube.add_argument("--config", default=None, metavar="FILE",
                      help="app-level berth.yaml: its server/log sections go into the "
                      "ConfigMap, its deploy: section sets resources, gpus, replicas, image")
    kube.add_argument("-o", "--output", metavar="DIR", default=None,
                      help="write one YAML file per object into DIR (default: stdout)")
    ks = targets.add_parser(
        "kserve",
        help="a ClusterServingRuntime for Berth and an example InferenceService",
        description="Render KServe's ClusterServingRuntime running Berth and an example "
        "InferenceService (the same as deploy/kserve/ in the repository).",
    )
    ks.add_argument("--image", default=None, help="Berth image with the frameworks installed")
    ks.add_argument("--namespace", default=None, help="namespace of the example InferenceService")
    ks.add_argument("--storage-uri", default="pvc://models/iris",
                    help="the example InferenceService's storageUri")
    ks.add_argument("-o", "--output", metavar="DIR", default=None,
                    help="write one YAML file per object into DIR (default: stdout)")


def run(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Runs ``berth deploy``."""
    if ns.target == "kubernetes":
        docs = kubernetes.render(kube_options(ns))
    else:
        if ns.namespace:
            kubernetes.check_name(ns.namespace, "--namespace")
        docs = [
            kserve.cluster_serving_runtime(ns.image),
            kserve.inference_service(storage_uri=ns.storage_uri, namespace=ns.namespace),
        ]
    _write(docs, ns.output)
    return 0
