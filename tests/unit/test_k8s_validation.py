"""The rendered manifests, checked the way a cluster would check them (deploy/k8s/validate.py):
every overlay through `kubectl kustomize`, every object strictly against the Kubernetes schemas of
the two newest minor versions, custom resources against deploy/k8s/schemas/. The README's
"Deploying to Kubernetes" commands run here exactly as written (about 8 s on 2 cores)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
README = REPO / "README.md"
BEGIN, END = "<!-- k8s-commands:begin -->", "<!-- k8s-commands:end -->"

Doc = dict[str, Any]


def _load_validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_validate", K8S / "validate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate = _load_validator()
VERSIONS: list[str] = validate.newest_minors()


def _readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    (body,) = re.findall(r"```bash\n(.*?)```", block, flags=re.DOTALL)
    return [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _venv_env() -> dict[str, str]:
    # What the README assumes: the repository root as working directory, .venv/bin on PATH.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def prod() -> list[Doc]:
    objects: list[Doc] = validate.render(K8S / "overlays" / "prod")
    return objects


def _one(objects: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return copy.deepcopy(found)


def test_readme_commands_render_and_validate_every_overlay_as_written() -> None:
    commands = _readme_commands()
    overlays = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
    for overlay in overlays:
        assert f"kubectl kustomize {overlay.relative_to(REPO)}" in commands
    assert "python deploy/k8s/validate.py" in commands
    for command in commands:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=REPO,
            env=_venv_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        if command.startswith("kubectl kustomize"):
            kinds = {doc["kind"] for doc in yaml.safe_load_all(done.stdout) if doc}
            assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
        else:
            for overlay in overlays:
                assert f"{overlay.relative_to(REPO)}: " in done.stdout
                assert re.search(rf"{overlay.relative_to(REPO)}: \d+ objects valid", done.stdout)


def test_validation_covers_the_two_newest_kubernetes_minors() -> None:
    from kubernetes_validate import utils

    assert len(VERSIONS) == 2
    newest = max(tuple(int(n) for n in v.split(".")[:2]) for v in utils.all_versions())
    assert VERSIONS[-1].startswith(f"{newest[0]}.{newest[1]}.")
    assert tuple(int(n) for n in VERSIONS[0].split(".")[:2]) == (newest[0], newest[1] - 1)


def _is_config(obj: Doc) -> bool:
    """The services' settings, not the monitoring component's dashboard ConfigMap."""
    return bool(obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("postwire-config-"))


def test_rendered_objects_pass(prod: list[Doc]) -> None:
    for kind, name in (("Deployment", "mta-worker"), ("Service", "inbound-smtp"), ("ConfigMap", "")):
        if kind == "ConfigMap":
            (obj,) = [o for o in prod if _is_config(o)]
        else:
            obj = _one(prod, kind, name)
        assert list(validate.problems(obj, VERSIONS)) == []


def test_a_misspelt_field_fails_strict_validation(prod: list[Doc]) -> None:
    deployment = _one(prod, "Deployment", "edge")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    found = list(validate.problems(deployment, VERSIONS))
    # Once per version: a field the API server would drop (or refuse under --validate=strict).
    assert len(found) == len(VERSIONS)
    assert all("imagePullPolcy" in p for p in found)


def test_a_wrong_type_fails_validation(prod: list[Doc]) -> None:
    hpa = _one(prod, "HorizontalPodAutoscaler", "router")
    hpa["spec"]["maxReplicas"] = "ten"
    assert any("maxReplicas" in p for p in validate.problems(hpa, VERSIONS))


def test_an_object_without_any_schema_fails() -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Frobnicator", "metadata": {"name": "x"}}
    assert [p for p in validate.problems(unknown, VERSIONS) if "no schema" in p]


SERVICE_MONITOR: Doc = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "postwire", "labels": {"app.kubernetes.io/part-of": "postwire"}},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/part-of": "postwire"}},
        "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
    },
}
PROMETHEUS_RULE: Doc = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "postwire"},
    "spec": {
        "groups": [
            {
                "name": "postwire",
                "rules": [
                    {
                        "alert": "PostwireDown",
                        "expr": 'up{job="postwire"} == 0',
                        "for": "5m",
                        "labels": {"severity": "page"},
                        "annotations": {"summary": "a Postwire pod is not scraped"},
                    }
                ],
            }
        ]
    },
}


def test_custom_resources_validate_against_the_vendored_schemas() -> None:
    assert validate.custom_schema(SERVICE_MONITOR).name == "servicemonitor-monitoring-v1.json"
    assert validate.custom_schema(PROMETHEUS_RULE).name == "prometheusrule-monitoring-v1.json"
    assert list(validate.problems(SERVICE_MONITOR, VERSIONS)) == []
    assert list(validate.problems(PROMETHEUS_RULE, VERSIONS)) == []


@pytest.mark.parametrize(
    ("resource", "path", "value", "named"),
    [
        (SERVICE_MONITOR, ("spec", "endpoints", 0, "intervall"), "30s", "intervall"),
        (SERVICE_MONITOR, ("spec", "endpoints", 0, "scheme"), "gopher", "gopher"),
        (SERVICE_MONITOR, ("spec", "selektor"), {}, "selektor"),
        (PROMETHEUS_RULE, ("spec", "groups", 0, "rules", 0, "expresion"), "up", "expresion"),
        (PROMETHEUS_RULE, ("kind",), "PrometheusRules", "PrometheusRules"),
    ],
)
def test_a_broken_custom_resource_fails(resource: Doc, path: tuple[Any, ...], value: Any, named: str) -> None:
    broken = copy.deepcopy(resource)
    target: Any = broken
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    found = list(validate.problems(broken, VERSIONS))
    assert found and any(named in p for p in found), found


def test_a_rule_without_its_expression_fails() -> None:
    broken = copy.deepcopy(PROMETHEUS_RULE)
    del broken["spec"]["groups"][0]["rules"][0]["expr"]
    assert any("expr" in p for p in validate.problems(broken, VERSIONS))


def test_vendored_schemas_name_their_source() -> None:
    for path in sorted((K8S / "schemas").glob("*.json")):
        comment = json.loads(path.read_text(encoding="utf-8"))["$comment"]
        assert re.search(r"prometheus-operator/prometheus-operator@[0-9a-f]{40}:example/", comment), path


def _deployments_config_names(objects: list[Doc]) -> dict[str, set[str]]:
    return {
        o["metadata"]["name"]: {
            ref["configMapRef"]["name"]
            for c in o["spec"]["template"]["spec"]["containers"]
            + o["spec"]["template"]["spec"].get("initContainers", [])
            for ref in c.get("envFrom", [])
        }
        for o in objects
        if o["kind"] == "Deployment"
    }


def test_a_config_change_rolls_every_pod(prod: list[Doc], tmp_path: Path) -> None:
    """A setting merged in from an overlay renames the ConfigMap and so changes every pod template
    (the rollout trigger); the base's comment says services read their settings only at start."""
    (config,) = [o for o in prod if _is_config(o)]
    before = config["metadata"]["name"]
    assert re.fullmatch(r"postwire-config-[a-z0-9]{10}", before)
    assert set().union(*_deployments_config_names(prod).values()) == {before}

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(K8S / "overlays" / "prod", overlay)],
                "configMapGenerator": [
                    {"name": "postwire-config", "behavior": "merge", "literals": ["POSTWIRE_LOG_LEVEL=debug"]}
                ],
            }
        ),
        encoding="utf-8",
    )
    changed = validate.render(overlay)
    (new_config,) = [o for o in changed if _is_config(o)]
    after = new_config["metadata"]["name"]
    assert after != before and new_config["data"]["POSTWIRE_LOG_LEVEL"] == "debug"
    names = _deployments_config_names(changed)
    assert len(names) == 8 and all(refs == {after} for refs in names.values())
