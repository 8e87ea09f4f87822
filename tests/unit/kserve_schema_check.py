"""Checks KServe objects (JSON list on stdin) against the schema of KServe's
CRDs as the ``kserve`` package carries it: its generated models (and the
``kubernetes`` client's, for pod fields), which list each field's JSON name
and type and refuse a missing required field. Run with KServe's Python
(``.venv-kserve``): prints one problem a line, exits 1 when there are any.

The kserve package ships no CRD YAML; its models are generated from the
same OpenAPI definitions as the CRDs' openAPIV3Schema, so an unknown field,
a wrong type or a missing required field is caught here as the API server
would catch it (value-level rules such as enums are not in the models).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import kserve.models as kserve_models
import kubernetes.client.models as kube_models

KINDS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
# Older generated models write list[X] and dict(str, X); newer (pydantic) ones
# List[X] and Dict[str, X].
_LIST = re.compile(r"^[lL]ist\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(([^,]+), (.+)\)|Dict\[([^,]+), (.+)\])$")


def _klass(name: str) -> Any:
    found = getattr(kserve_models, name, None) or getattr(kube_models, name, None)
    if found is None:
        raise LookupError(f"no model class {name}")
    return found


def build(value: Any, typ: str, where: str, problems: list[str]) -> Any:
    """``value`` as an object of OpenAPI type ``typ``; problems appended."""
    if value is None:
        return None
    if m := _LIST.match(typ):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {type(value).__name__}")
            return None
        return [build(v, m.group(1), f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if m := _DICT.match(typ):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
            return None
        inner = m.group(2) or m.group(4)
        return {k: build(v, inner, f"{where}.{k}", problems) for k, v in value.items()}
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if typ in simple:
        ok = isinstance(value, simple[typ]) and not (typ == "int" and isinstance(value, bool))
        if not ok:
            problems.append(f"{where}: expected {typ}, got {value!r}")
        return value
    if typ in ("object", "datetime", "date"):
        return value
    klass = _klass(typ)
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a {typ} mapping, got {type(value).__name__}")
        return None
    by_json = {json_name: attr for attr, json_name in klass.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in by_json:
            problems.append(f"{where}.{key}: unknown field of {typ}")
            continue
        attr = by_json[key]
        kwargs[attr] = build(item, klass.openapi_types[attr], f"{where}.{key}", problems)
    try:
        return klass(**kwargs)
    except (ValueError, TypeError) as e:  # a missing required field, a bad value
        problems.append(f"{where}: {typ}: " + " ".join(str(e).split()))
        return None


def main() -> int:
    docs = json.load(sys.stdin)
    problems: list[str] = []
    for index, doc in enumerate(docs):
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in KINDS:
            problems.append(f"document {index}: {key} is not a KServe kind this check knows")
            continue
        build(doc, KINDS[key], f"{doc['kind']}", problems)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
