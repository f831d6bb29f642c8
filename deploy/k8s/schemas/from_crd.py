"""Writes a strict JSON Schema for one custom resource from its CustomResourceDefinition.

    python deploy/k8s/schemas/from_crd.py CRD.yaml v1 SOURCE > deploy/k8s/schemas/<kind>.json

The CRD's openAPIV3Schema is copied whole; three changes make it check what the API server would
check with `--validate=strict` (field validation Strict), which plain JSON Schema does not do:
- every object that lists `properties` (and does not keep unknown fields) gets
  `additionalProperties: false`, so a misspelt field fails instead of being pruned silently;
- `x-kubernetes-int-or-string` becomes `anyOf: [integer, string]`;
- `apiVersion` and `kind` are pinned and, with `metadata`, required.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schema_for(crd: dict[str, Any], version: str, source: str) -> dict[str, Any]:
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema: dict[str, Any] = _strict(served["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    operator = crd["metadata"].get("annotations", {}).get("operator.prometheus.io/version", "?")
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": f"{kind} {group}/{version} from {source} (prometheus-operator {operator}); "
        "made strict by deploy/k8s/schemas/from_crd.py",
        **schema,
    }


def main() -> None:
    path, version, source = sys.argv[1:4]
    crd = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    json.dump(schema_for(crd, version, source), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
