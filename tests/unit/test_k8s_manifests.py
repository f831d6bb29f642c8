"""Static checks of the Kubernetes manifests in deploy/k8s.

These read the YAML as data and assert the properties the deployment depends on (probes, drain
time, autoscaling, hardening, the network-policy graph), so a careless edit fails here rather than
in a cluster. test_k8s_validation.py renders the overlays and validates every object against
the Kubernetes schemas.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.config import CommonConfig
from libs.dev_switch import SECRET_DEFAULTS, SECRETS_BY_SERVICE

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
BASE = K8S / "base"
NETPOL = K8S / "components" / "network-policies"

GRPC_PORT = 50051
IMAGE = "ghcr.io/postwire/postwire"
# Kubernetes object name -> `postwire serve` argument.
SERVICES = {
    "edge": "edge",
    "submission": "submission",
    "template": "template",
    "policy": "policy",
    "router": "router",
    "mta-worker": "mta_worker",
    "events": "events",
    "inbound": "inbound",
}
# Services beyond each deployment's own gRPC one: inbound's public SMTP listener.
EXTRA_SERVICES = {"inbound-smtp"}
INBOUND_SMTP_PORT = 2526
# Who may call whom on GRPC_PORT, and nothing else.
GRPC_EDGES = {
    ("edge", "submission"),
    ("edge", "template"),
    ("edge", "events"),
    ("edge", "policy"),
    ("submission", "policy"),
    ("submission", "template"),
    # GetMessage's timeline (postwire.internal.v1.EventReaderService).
    ("submission", "events"),
    ("template", "policy"),
    ("events", "policy"),
    ("router", "template"),
}
# The only services that read POSTWIRE_API_KEY_PEPPER (services/policy/config.py).
PEPPER_READERS = {"policy"}
# The only services that open sealed DKIM keys with POSTWIRE_SECRET_KEY: policy seals, mta-worker signs.
SECRET_KEY_READERS = {"policy", "mta-worker"}
PRIVATE_RANGES = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"}
SMTP_PORTS = {25, 465, 587}
COMMON_EGRESS_PORTS = {4222, 5432, 4317}
REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
)
CONFIG_KEYS = {
    "POSTWIRE_NATS_URL",
    "POSTWIRE_POLICY_ADDR",
    "POSTWIRE_TEMPLATE_ADDR",
    "POSTWIRE_SUBMISSION_ADDR",
    "POSTWIRE_EVENTS_ADDR",
    "POSTWIRE_SMARTHOST",
    "POSTWIRE_HOSTNAME",
    "POSTWIRE_RETURN_PATH_HOST",
    "POSTWIRE_SPF_INCLUDE",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "POSTWIRE_LOG_LEVEL",
    "POSTWIRE_DRAIN_SECONDS",
}

METRICS_PORT = 9464
# Where Prometheus runs; the only namespace that may reach METRICS_PORT.
MONITORING_NAMESPACE = "monitoring"
# The shared settings: a configMapGenerator env file, so every change renames the ConfigMap and
# rolls the pods that read it.
CONFIG_ENV = BASE / "config.env"

Doc = dict[str, Any]


def _yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in {".yaml", ".yml"})


def _load(path: Path) -> list[Doc]:
    with path.open(encoding="utf-8") as f:
        # libyaml's parser under the same safe constructor: ~270 loads at collection, ~10x quicker.
        return [d for d in yaml.load_all(f, Loader=yaml.CSafeLoader) if d is not None]


def _objects() -> list[tuple[Path, Doc]]:
    return [(path, doc) for path in _yaml_files() if path.name != "kustomization.yaml" for doc in _load(path)]


def _only(kind: str, directory: Path) -> dict[str, Doc]:
    found: dict[str, Doc] = {}
    for path, doc in _objects():
        if doc["kind"] == kind and directory in path.parents:
            name = doc["metadata"]["name"]
            assert name not in found, f"two {kind} objects named {name}"
            found[name] = doc
    return found


def _containers(deployment: Doc) -> list[Doc]:
    containers: list[Doc] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


DEPLOYMENTS = _only("Deployment", BASE)
ALL_SERVICES = _only("Service", BASE)
SERVICES_BY_NAME = {k: v for k, v in ALL_SERVICES.items() if k not in EXTRA_SERVICES}
HPAS = _only("HorizontalPodAutoscaler", BASE)
PDBS = _only("PodDisruptionBudget", BASE)
NETWORK_POLICIES = _only("NetworkPolicy", NETPOL)


SERVICE_NAMES = list(SERVICES)


# --- files and kustomize layout ---------------------------------------------------------------


def test_every_yaml_file_parses_into_kubernetes_objects() -> None:
    files = _yaml_files()
    assert len(files) > 30
    for path in files:
        docs = _load(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: missing apiVersion/kind"


def test_every_object_has_a_name_and_no_hardcoded_namespace() -> None:
    for path, doc in _objects():
        assert doc["metadata"]["name"], path
        # Overlays choose the namespace; one baked into the base would win over theirs for
        # references and confuse them.
        assert "namespace" not in doc["metadata"], f"{path}: namespace belongs in the overlay"


def _kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


@pytest.mark.parametrize("kustomization", _kustomizations(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_entries_exist(kustomization: Path) -> None:
    (doc,) = _load(kustomization)
    entries = list(doc.get("resources", [])) + list(doc.get("components", []))
    assert entries, f"{kustomization} lists nothing"
    for entry in entries:
        target = (kustomization.parent / entry).resolve()
        assert target.exists(), f"{kustomization}: {entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").is_file(), f"{entry} is not a kustomization"
    for patch in doc.get("patches", []):
        if "path" in patch:
            assert (kustomization.parent / patch["path"]).is_file()


def test_every_yaml_file_is_listed_by_a_kustomization() -> None:
    listed = set()
    for kustomization in _kustomizations():
        (doc,) = _load(kustomization)
        for entry in doc.get("resources", []):
            listed.add((kustomization.parent / entry).resolve())
    for path, _ in _objects():
        assert path.resolve() in listed, f"{path} is not referenced by any kustomization.yaml"


def test_base_lists_every_service_and_labels_everything_part_of_postwire() -> None:
    (doc,) = _load(BASE / "kustomization.yaml")
    assert "namespace" not in doc
    assert set(SERVICES) <= set(doc["resources"])
    # Migrations run in each Deployment's initContainer; an immutable Job would race the rollout
    # and refuse the next `kubectl apply` with a new image.
    assert not {"config.yaml", "migrate-job.yaml"} & set(doc["resources"])
    assert not (BASE / "migrate-job.yaml").exists()
    (generator,) = doc["configMapGenerator"]
    assert generator["name"] == "postwire-config"
    assert generator["envs"] == ["config.env"]
    # The hash suffix is the point: a changed value is a new name, so the pod templates change.
    assert not generator.get("options", {}).get("disableNameSuffixHash")
    assert not doc.get("generatorOptions", {}).get("disableNameSuffixHash")
    pairs = [entry["pairs"] for entry in doc["labels"]]
    assert {"app.kubernetes.io/part-of": "postwire"} in pairs
    for name in SERVICES:
        (svc_doc,) = _load(BASE / name / "kustomization.yaml")
        assert set(svc_doc["resources"]) == {
            "deployment.yaml",
            "service.yaml",
            "hpa.yaml",
            "pdb.yaml",
            "serviceaccount.yaml",
        } | ({"smtp-service.yaml"} if name == "inbound" else set())


def test_network_policies_are_an_opt_in_component_used_by_prod_only() -> None:
    (component,) = _load(NETPOL / "kustomization.yaml")
    assert component["kind"] == "Component"
    (prod,) = _load(K8S / "overlays" / "prod" / "kustomization.yaml")
    (dev,) = _load(K8S / "overlays" / "dev" / "kustomization.yaml")
    assert prod["namespace"] == "postwire"
    assert dev["namespace"] == "postwire-dev"
    assert "../../components/network-policies" in prod.get("components", [])
    assert not dev.get("components")
    for overlay in (prod, dev):
        assert [image["name"] for image in overlay["images"]] == [IMAGE]


def test_dev_overlay_runs_one_replica_and_lets_the_hpa_go_down_to_one() -> None:
    (dev,) = _load(K8S / "overlays" / "dev" / "kustomization.yaml")
    assert {r["name"]: r["count"] for r in dev["replicas"]} == dict.fromkeys(SERVICES, 1)
    hpa_patches = [p for p in dev["patches"] if p["target"]["kind"] == "HorizontalPodAutoscaler"]
    assert len(hpa_patches) == 1
    ops = yaml.safe_load(hpa_patches[0]["patch"])
    assert {"op": "replace", "path": "/spec/minReplicas", "value": 1} in ops


# --- Deployments ------------------------------------------------------------------------------


def test_exactly_the_expected_deployments_exist() -> None:
    assert set(DEPLOYMENTS) == set(SERVICES)


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_runs_postwire_serve_with_the_cli_name(name: str) -> None:
    (container,) = _containers(DEPLOYMENTS[name])
    assert container["command"] == ["postwire", "serve", SERVICES[name]]
    assert container["command"][2] in SERVICES.values()
    assert container["image"].rsplit(":", 1)[0] == IMAGE
    assert "args" not in container


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_has_grpc_probes_on_the_grpc_port(name: str) -> None:
    (container,) = _containers(DEPLOYMENTS[name])
    assert {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"} in container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == GRPC_PORT, f"{name}: {probe}"
    # Readiness asks the `readiness` health service: schema version, PostgreSQL and NATS (the
    # edge: its own listener), so a lost dependency takes the pod out of the endpoints.
    assert container["readinessProbe"]["grpc"]["service"] == "readiness"
    # Liveness and startup ask the empty name, which reflects only a responsive process: a
    # database blip must not restart the fleet.
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["grpc"].get("service", "") == "", f"{name}: {probe}"
    assert _env(container)["POSTWIRE_LISTEN"]["value"] == f"0.0.0.0:{GRPC_PORT}"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_serves_metrics_on_its_own_port(name: str) -> None:
    (container,) = _containers(DEPLOYMENTS[name])
    assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in container["ports"]
    assert _env(container)["POSTWIRE_METRICS_LISTEN"] == {
        "name": "POSTWIRE_METRICS_LISTEN",
        "value": f"0.0.0.0:{METRICS_PORT}",
    }


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_service_has_its_own_service_account_without_a_token(name: str) -> None:
    (account,) = _load(BASE / name / "serviceaccount.yaml")
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["name"] == name
    assert account["automountServiceAccountToken"] is False
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/part-of"):
        assert account["metadata"]["labels"][key] == DEPLOYMENTS[name]["metadata"]["labels"][key]
    assert DEPLOYMENTS[name]["spec"]["template"]["spec"]["serviceAccountName"] == name


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_sets_requests_and_limits(name: str) -> None:
    (container,) = _containers(DEPLOYMENTS[name])
    resources = container["resources"]
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[section]), f"{name}: {section}"
    if name == "template":
        # The render workers' caps, with the server, must fit under the pod's limit.
        env = _env(container)
        workers = int(env["POSTWIRE_RENDER_WORKERS"]["value"])
        cap_mb = int(env["POSTWIRE_RENDER_MEMORY_MB"]["value"])
        limit_mb = int(resources["limits"]["memory"].removesuffix("Mi"))
        assert workers * cap_mb + 128 <= limit_mb, "render workers' caps exceed the pod's memory limit"
    else:
        assert resources["limits"]["memory"] == "384Mi"
    cpu = resources["requests"]["cpu"]
    assert cpu.endswith("m") and 100 <= int(cpu[:-1]) <= 250, f"{name}: cpu request {cpu}"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_runs_with_a_restricted_security_context(name: str) -> None:
    pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    (container,) = _containers(DEPLOYMENTS[name])
    ctx = container["securityContext"]
    pod_ctx = pod.get("securityContext", {})

    def effective(key: str) -> Any:
        return ctx.get(key, pod_ctx.get(key))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == 10001
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert not ctx["capabilities"].get("add")
    assert not ctx.get("privileged")
    # With a read-only root, /tmp must be a writable emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_rolls_out_without_losing_capacity(name: str) -> None:
    spec = DEPLOYMENTS[name]["spec"]
    rolling = spec["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    assert rolling["maxSurge"] == 1
    assert spec["minReadySeconds"] >= 5
    # The HPA owns the replica count; a value here would be re-applied on every deploy.
    assert "replicas" not in spec


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_labels_and_selector_agree(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for labels in (deployment["metadata"]["labels"], pod_labels):
        for key in REQUIRED_LABELS:
            assert labels.get(key), f"{name}: label {key}"
        assert labels["app.kubernetes.io/name"] == name
        assert labels["app.kubernetes.io/part-of"] == "postwire"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    # A label whose value changes between releases must not be in an immutable selector.
    assert "app.kubernetes.io/version" not in selector


# Each secret variable -> (Secret, key). POSTWIRE_SMARTHOST_* come from an optional Secret: a relay
# without AUTH needs none.
SECRET_SOURCES = {
    "POSTWIRE_DATABASE_URL": ("postwire-database", "url"),
    "POSTWIRE_API_KEY_PEPPER": ("postwire-secrets", "api-key-pepper"),
    "POSTWIRE_ADMIN_TOKEN": ("postwire-secrets", "admin-token"),
    "POSTWIRE_SECRET_KEY": ("postwire-secrets", "secret-key"),
    # Also the key that seals webhook signing secrets at rest (libs/webhook_secrets.py).
    "POSTWIRE_TOKEN_KEYS": ("postwire-secrets", "token-keys"),
    "POSTWIRE_INTERNAL_TOKEN": ("postwire-secrets", "internal-token"),
    "POSTWIRE_SMARTHOST_USERNAME": ("postwire-relay", "username"),
    "POSTWIRE_SMARTHOST_PASSWORD": ("postwire-relay", "password"),
}
# Who gets which secret: exactly the processes that use it (checked against the code below).
SECRET_READERS = {
    "POSTWIRE_DATABASE_URL": set(SERVICES) - {"edge"},
    "POSTWIRE_API_KEY_PEPPER": {"policy"},
    "POSTWIRE_ADMIN_TOKEN": {"policy"},
    "POSTWIRE_SECRET_KEY": {"policy", "mta-worker"},
    "POSTWIRE_TOKEN_KEYS": {"policy", "template", "events", "mta-worker", "inbound"},
    "POSTWIRE_INTERNAL_TOKEN": {"policy", "template", "submission", "router", "events"},
    "POSTWIRE_SMARTHOST_USERNAME": {"mta-worker"},
    "POSTWIRE_SMARTHOST_PASSWORD": {"mta-worker"},
}
CONFIG_CLASSES = {
    "edge": "EdgeConfig",
    "submission": "SubmissionConfig",
    "template": "TemplateConfig",
    "policy": "PolicyConfig",
    "router": "RouterConfig",
    "mta_worker": "WorkerConfig",
    "events": "EventsConfig",
    "inbound": "InboundConfig",
}
REPO = K8S.parents[1]


class _ReadRecorder(Mapping[str, str]):
    """An empty environment that remembers every name a config loader asks for."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _reads(name: str) -> set[str]:
    cli_name = SERVICES[name]
    module = importlib.import_module(f"services.{cli_name}.config")
    env = _ReadRecorder()
    getattr(module, CONFIG_CLASSES[cli_name]).from_env(env)
    return env.read


def _uses(name: str, secret: str) -> bool:
    """Whether the process really needs `secret`. CommonConfig reads the database URL and the
    internal token for everyone, so those two are judged by use: a pool opened, an internal RPC
    served or made (libs/dev_switch.py keeps that list); the rest by what the config reads."""
    cli_name = SERVICES[name]
    if secret == "POSTWIRE_DATABASE_URL":
        return "connect_pool(" in (REPO / "services" / cli_name / "server.py").read_text(encoding="utf-8")
    if secret == "POSTWIRE_INTERNAL_TOKEN":
        return secret in SECRETS_BY_SERVICE[cli_name]
    return secret in _reads(name)


@pytest.mark.parametrize("secret", sorted(SECRET_READERS))
def test_secret_readers_are_the_processes_whose_code_uses_the_secret(secret: str) -> None:
    assert {name for name in SERVICES if _uses(name, secret)} == SECRET_READERS[secret]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_mounts_exactly_the_secrets_its_process_reads(name: str) -> None:
    (container,) = _containers(DEPLOYMENTS[name])
    env = _env(container)
    for secret, readers in SECRET_READERS.items():
        if name not in readers:
            # Least privilege: template runs tenant-supplied Jinja, the edge forwards bytes.
            assert secret not in env, f"{name} is given {secret}, which it never uses"
            continue
        ref = env[secret]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == SECRET_SOURCES[secret], f"{name}: {secret}"
        assert ref.get("optional", False) is (secret.startswith("POSTWIRE_SMARTHOST_")), secret
        # Secrets come from Secrets, never as literals in a manifest.
        assert "value" not in env[secret]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_wires_shared_config_and_its_own_name(name: str) -> None:
    (container,) = _containers(DEPLOYMENTS[name])
    env = _env(container)
    assert {"configMapRef": {"name": "postwire-config"}} in container["envFrom"]
    # Dev shortcuts never reach a cluster.
    assert "POSTWIRE_DEV_FROM_DOMAINS" not in env
    assert env["OTEL_SERVICE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['app.kubernetes.io/name']"
    )


def _quantity(text: str) -> float:
    """A Kubernetes quantity in the forms the manifests use: 100m, 1, 128Mi."""
    if text.endswith("m"):
        return int(text[:-1]) / 1000
    if text.endswith("Mi"):
        return int(text[:-2]) * 2**20
    return float(text)


DB_USERS = sorted(SECRET_READERS["POSTWIRE_DATABASE_URL"])


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_pods_that_use_the_database_migrate_it_first_in_an_init_container(name: str) -> None:
    pod = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    if name not in DB_USERS:
        assert not pod.get("initContainers"), "the edge has no schema to wait for"
        return
    (init,) = pod["initContainers"]
    (container,) = _containers(DEPLOYMENTS[name])
    # `postwire migrate` takes a PostgreSQL advisory lock, so the init containers of every pod
    # of a rollout queue behind one another and the later ones find nothing to do.
    assert init["command"] == ["postwire", "migrate"]
    assert init["image"] == container["image"]
    assert _env(init)["POSTWIRE_DATABASE_URL"] == _env(container)["POSTWIRE_DATABASE_URL"]
    # Nothing else secret: the migrator needs only the URL.
    assert set(_env(init)) & set(SECRET_SOURCES) == {"POSTWIRE_DATABASE_URL"}
    assert init["securityContext"] == container["securityContext"]
    # A pod is scheduled on the larger of its init and its app requests: the migrator asks for no
    # more than the app, so it never makes a pod harder to place.
    for resource in ("cpu", "memory"):
        assert _quantity(init["resources"]["requests"][resource]) <= _quantity(
            container["resources"]["requests"][resource]
        ), resource
    assert {"cpu", "memory"} <= set(init["resources"]["limits"])
    assert {"name": "tmp", "mountPath": "/tmp"} in init["volumeMounts"]


@pytest.mark.parametrize("name", DB_USERS)
def test_every_database_user_sets_its_pool_size(name: str) -> None:
    (container,) = _containers(DEPLOYMENTS[name])
    env = _env(container)
    low = int(env["POSTWIRE_DB_POOL_MIN_SIZE"]["value"])
    high = int(env["POSTWIRE_DB_POOL_MAX_SIZE"]["value"])
    assert 1 <= low <= high
    # The value the process would read is the value the manifest states.
    cli_name = SERVICES[name]
    module = importlib.import_module(f"services.{cli_name}.config")
    loaded = getattr(module, CONFIG_CLASSES[cli_name]).from_env(
        {"POSTWIRE_DB_POOL_MIN_SIZE": str(low), "POSTWIRE_DB_POOL_MAX_SIZE": str(high)}
    )
    assert (loaded.common.db_pool_min_size, loaded.common.db_pool_max_size) == (low, high)


def _pool_max(name: str) -> int:
    return int(_env(_containers(DEPLOYMENTS[name])[0])["POSTWIRE_DB_POOL_MAX_SIZE"]["value"])


def connection_budget() -> tuple[int, int]:
    """PostgreSQL connections (every Deployment at its HPA maximum with every pool full; the peak
    during a rollout at that size: one surge pod more per Deployment, plus its migrate init
    container's one connection)."""
    at_max = sum(HPAS[name]["spec"]["maxReplicas"] * _pool_max(name) for name in DB_USERS)
    surge = {name: DEPLOYMENTS[name]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] for name in DB_USERS}
    peak = at_max + sum(surge[name] * (_pool_max(name) + 1) for name in DB_USERS)
    return at_max, peak


def test_readme_states_the_connection_budget_at_maximum_replicas() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    at_max, peak = connection_budget()
    assert f"**{at_max} connections**" in readme
    assert f"**{peak} connections**" in readme


def _setting(container: Doc, key: str, default: float) -> float:
    """What a pod reads for `key`: its own env first, then the shared ConfigMap, then the default."""
    env = _env(container)
    if key in env:
        return float(env[key]["value"])
    return float(_config_env().get(key, default))


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_termination_grace_is_drain_plus_shutdown_grace_plus_five_seconds(name: str) -> None:
    """A pod stops in the drain pause plus its shutdown grace plus a few seconds to close
    (libs/service_main.py), so Kubernetes must wait exactly that long and no longer before SIGKILL:
    shorter kills work the grace promised to finish, longer only slows rollouts."""
    (container,) = _containers(DEPLOYMENTS[name])
    defaults = CommonConfig.from_env({}, service=SERVICES[name], default_port=GRPC_PORT)
    drain = _setting(container, "POSTWIRE_DRAIN_SECONDS", defaults.drain_seconds)
    grace = _setting(container, "POSTWIRE_SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace_seconds)
    assert DEPLOYMENTS[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == drain + grace + 5


def test_mta_worker_waits_longest_for_replies_to_the_final_dot() -> None:
    graces = {
        name: _setting(_containers(d)[0], "POSTWIRE_SHUTDOWN_GRACE_SECONDS", 10.0)
        for name, d in DEPLOYMENTS.items()
    }
    # A remote MX may be slow to answer "."; giving up on that reply is the one way a shutdown
    # can send a message twice, so the worker's grace is the longest.
    assert graces["mta-worker"] >= 60
    assert graces["mta-worker"] > max(v for k, v in graces.items() if k != "mta-worker")


# --- Services, HPAs, PDBs ---------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_service_selects_its_deployment_on_the_grpc_and_metrics_ports(name: str) -> None:
    service = SERVICES_BY_NAME[name]
    pod_labels = DEPLOYMENTS[name]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    assert ports["grpc"]["port"] == GRPC_PORT
    assert ports["grpc"]["targetPort"] in ("grpc", GRPC_PORT)
    # A ServiceMonitor selects Services by label and scrapes their endpoints by port name.
    assert (ports["metrics"]["port"], ports["metrics"]["targetPort"]) == (METRICS_PORT, "metrics")


def test_the_public_smtp_service_does_not_expose_metrics() -> None:
    assert [p["port"] for p in ALL_SERVICES["inbound-smtp"]["spec"]["ports"]] == [25]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_grpc_services_are_headless_except_edge(name: str) -> None:
    spec = SERVICES_BY_NAME[name]["spec"]
    if name == "edge":
        assert spec.get("clusterIP") != "None"
        assert spec.get("type", "ClusterIP") in ("ClusterIP", "LoadBalancer")
    else:
        # A ClusterIP would pin each client's HTTP/2 connection to one pod.
        assert spec["clusterIP"] == "None"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_deployment_has_an_hpa_that_scales_in_slowly(name: str) -> None:
    hpa = HPAS[name]
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert spec["minReplicas"] == 2
    assert spec["maxReplicas"] == (20 if name == "mta-worker" else 10)
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    scale_down = spec["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 300
    assert {"type": "Pods", "value": 1, "periodSeconds": 60} in scale_down["policies"]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_deployment_has_a_pdb(name: str) -> None:
    pdb = PDBS[name]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    # A PDB only protects availability when more than one replica is guaranteed.
    assert HPAS[name]["spec"]["minReplicas"] > 1
    pod_labels = DEPLOYMENTS[name]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_no_orphan_services_hpas_or_pdbs() -> None:
    for kind in (SERVICES_BY_NAME, HPAS, PDBS):
        assert set(kind) == set(SERVICES)
    assert set(ALL_SERVICES) - set(SERVICES_BY_NAME) == EXTRA_SERVICES


def test_inbound_smtp_is_public_on_port_25_and_keeps_the_client_address() -> None:
    spec = ALL_SERVICES["inbound-smtp"]["spec"]
    assert spec["type"] == "LoadBalancer"
    # The per-address connection limit needs the client's own address, not a node's.
    assert spec["externalTrafficPolicy"] == "Local"
    (port,) = spec["ports"]
    assert (port["port"], port["targetPort"]) == (25, "smtp")
    (container,) = _containers(DEPLOYMENTS["inbound"])
    assert {"name": "smtp", "containerPort": INBOUND_SMTP_PORT, "protocol": "TCP"} in container["ports"]
    assert _env(container)["POSTWIRE_INBOUND_LISTEN"]["value"] == f"0.0.0.0:{INBOUND_SMTP_PORT}"
    assert (
        spec["selector"].items() <= DEPLOYMENTS["inbound"]["spec"]["template"]["metadata"]["labels"].items()
    )


# --- shared config and migrations -------------------------------------------------------------


def _config_env() -> dict[str, str]:
    data: dict[str, str] = {}
    for line in CONFIG_ENV.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key == key.strip() and value == value.strip(), f"config.env: {line!r}"
            # kustomize keeps quotes as part of the value.
            assert not value.startswith(('"', "'")), f"config.env: {line!r} would keep its quotes"
            data[key] = value
    return data


def test_config_map_holds_the_shared_settings_and_no_secrets() -> None:
    data = _config_env()
    assert set(data) >= CONFIG_KEYS
    assert all(isinstance(v, str) for v in data.values())
    assert not set(SECRET_SOURCES) & set(data)
    for key in (
        "POSTWIRE_POLICY_ADDR",
        "POSTWIRE_TEMPLATE_ADDR",
        "POSTWIRE_SUBMISSION_ADDR",
        "POSTWIRE_EVENTS_ADDR",
    ):
        # Client-side balancing needs the dns resolver and a headless Service behind it.
        host_port = data[key].removeprefix("dns:///")
        assert host_port != data[key], f"{key} must use the dns:/// resolver"
        host, port = host_port.split(":")
        assert int(port) == GRPC_PORT
        assert SERVICES_BY_NAME[host]["spec"]["clusterIP"] == "None"


def test_readme_documents_the_migrations_and_the_secrets() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for needle in (
        "kubectl apply -k deploy/k8s/overlays/dev",
        "initContainer",
        "advisory lock",
        "configMapGenerator",
        "postwire-relay",
        "postwire-database",
        "postwire-secrets",
        "api-key-pepper",
        "token-keys",
        "JetStream",
        "POSTWIRE_SMARTHOST",
    ):
        assert needle in readme, needle


# --- network policies -------------------------------------------------------------------------


def _selected_service(selector: Doc) -> str | None:
    name: str | None = selector.get("matchLabels", {}).get("app.kubernetes.io/name")
    return name


def _ports(rule: Doc) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}


def _policies_for(service: str) -> list[Doc]:
    """NetworkPolicies whose podSelector matches the service's pods."""
    pod_labels = DEPLOYMENTS[service]["spec"]["template"]["metadata"]["labels"]
    return [
        p
        for p in NETWORK_POLICIES.values()
        if p["spec"]["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()
    ]


def test_default_deny_covers_ingress_and_egress_for_the_whole_namespace() -> None:
    deny = NETWORK_POLICIES["default-deny"]["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress")
    assert not deny.get("egress")


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_service_may_reach_dns_nats_postgres_and_otlp(name: str) -> None:
    egress = [rule for p in _policies_for(name) for rule in p["spec"].get("egress", [])]
    dns = [r for r in egress if _ports(r) >= {("UDP", 53), ("TCP", 53)}]
    assert dns, f"{name}: no DNS egress"
    assert any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("k8s-app") == "kube-dns"
        for r in dns
        for peer in r["to"]
    )
    reachable = {port for r in egress for _, port in _ports(r)}
    assert reachable >= COMMON_EGRESS_PORTS, name


def _grpc_graph() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(caller, callee) pairs allowed on GRPC_PORT, once by egress rules and once by ingress rules."""
    by_egress: set[tuple[str, str]] = set()
    by_ingress: set[tuple[str, str]] = set()
    for service in SERVICES:
        for policy in _policies_for(service):
            for rule in policy["spec"].get("egress", []):
                if ("TCP", GRPC_PORT) in _ports(rule):
                    for peer in rule["to"]:
                        callee = _selected_service(peer["podSelector"])
                        assert callee in SERVICES, f"{service}: egress to an unknown peer {peer}"
                        by_egress.add((service, callee))
            for rule in policy["spec"].get("ingress", []):
                if ("TCP", GRPC_PORT) in _ports(rule) and "from" in rule:
                    for peer in rule["from"]:
                        caller = _selected_service(peer["podSelector"])
                        assert caller in SERVICES, f"{service}: ingress from an unknown peer {peer}"
                        by_ingress.add((caller, service))
    return by_egress, by_ingress


def test_grpc_calls_are_allowed_only_along_the_documented_edges() -> None:
    by_egress, by_ingress = _grpc_graph()
    assert by_egress == GRPC_EDGES
    assert by_ingress == GRPC_EDGES


def test_only_edge_accepts_grpc_and_only_inbound_smtp_from_anywhere() -> None:
    open_to_all = {}
    for service in SERVICES:
        for policy in _policies_for(service):
            for rule in policy["spec"].get("ingress", []):
                if "from" not in rule:
                    open_to_all[service] = _ports(rule)
    assert open_to_all == {"edge": {("TCP", GRPC_PORT)}, "inbound": {("TCP", INBOUND_SMTP_PORT)}}


def test_inbound_calls_no_peer() -> None:
    # Its events go through the outbox in PostgreSQL and NATS (the common rule), nothing else.
    egress = [rule for p in _policies_for("inbound") for rule in p["spec"].get("egress", [])]
    assert {port for rule in egress for _, port in _ports(rule)} == COMMON_EGRESS_PORTS | {53}


def test_only_mta_worker_speaks_smtp_and_only_to_public_addresses() -> None:
    for service in SERVICES:
        for policy in _policies_for(service):
            for rule in policy["spec"].get("egress", []):
                smtp = {port for _, port in _ports(rule)} & SMTP_PORTS
                if not smtp:
                    continue
                assert service == "mta-worker", f"{service} may not open SMTP connections"
                assert smtp == SMTP_PORTS
                blocks = [peer["ipBlock"] for peer in rule["to"]]
                assert len(blocks) == len(rule["to"]), "SMTP egress must be by ipBlock only"
                v4 = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
                assert v4 and PRIVATE_RANGES <= set(v4[0]["except"])
                for block in blocks:
                    assert block.get("except"), f"{block['cidr']} without private-range exceptions"
    smtp_rules = [
        rule
        for policy in _policies_for("mta-worker")
        for rule in policy["spec"].get("egress", [])
        if {port for _, port in _ports(rule)} & SMTP_PORTS
    ]
    assert smtp_rules


def test_only_events_speaks_https_out_and_only_to_public_addresses() -> None:
    # Webhook delivery; any other service opening 443 outward would be an unguarded SSRF path.
    https_rules = []
    for service in SERVICES:
        for policy in _policies_for(service):
            for rule in policy["spec"].get("egress", []):
                if ("TCP", 443) not in _ports(rule):
                    continue
                assert service == "events", f"{service} may not open HTTPS connections"
                blocks = [peer["ipBlock"] for peer in rule["to"]]
                assert len(blocks) == len(rule["to"]), "HTTPS egress must be by ipBlock only"
                v4 = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
                assert v4 and PRIVATE_RANGES <= set(v4[0]["except"])
                for block in blocks:
                    assert block.get("except"), f"{block['cidr']} without private-range exceptions"
                https_rules.append(rule)
    assert https_rules


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_only_the_monitoring_namespace_may_scrape_metrics(name: str) -> None:
    scrapers = [
        rule
        for policy in _policies_for(name)
        for rule in policy["spec"].get("ingress", [])
        if ("TCP", METRICS_PORT) in _ports(rule)
    ]
    assert scrapers, f"{name}: Prometheus cannot reach {METRICS_PORT}"
    for rule in scrapers:
        assert _ports(rule) == {("TCP", METRICS_PORT)}
        assert rule["from"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}
        ]


def test_no_egress_rule_is_unrestricted() -> None:
    for name, policy in NETWORK_POLICIES.items():
        for rule in policy["spec"].get("egress", []):
            # A rule without ports opens every port to its peers; one without peers and
            # without ports would open everything.
            assert rule.get("ports"), f"{name}: egress rule without ports"


# --- internal token and the dev switch --------------------------------------------------------

# The services that serve or call postwire.internal.v1 (libs/dev_switch.py SECRETS_BY_SERVICE).
INTERNAL_TOKEN_USERS = {"policy", "template", "submission", "router", "events"}


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_internal_token_comes_from_the_secret_for_exactly_its_users(name: str) -> None:
    (container,) = _containers(DEPLOYMENTS[name])
    env = _env(container)
    if name in INTERNAL_TOKEN_USERS:
        assert env["POSTWIRE_INTERNAL_TOKEN"] == {
            "name": "POSTWIRE_INTERNAL_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "postwire-secrets", "key": "internal-token"}},
        }
    else:
        # The edge forwards public calls with the caller's own credential; mta_worker calls no one.
        assert "POSTWIRE_INTERNAL_TOKEN" not in env


def test_no_manifest_turns_on_the_dev_switch_or_a_dev_only_setting() -> None:
    dev_only = {
        "POSTWIRE_ENV",
        "POSTWIRE_DEV_FROM_DOMAINS",
        "POSTWIRE_MX_ALLOW_PRIVATE",
        "POSTWIRE_WEBHOOK_ALLOW_PRIVATE",
    }
    for path in _yaml_files():
        text = path.read_text(encoding="utf-8")
        for name in dev_only:
            # Parsed objects could hide it in a patch or a literal; the text cannot.
            assert f"{name}:" not in text and f"name: {name}\n" not in text, f"{path}: {name}"
    for path, doc in _objects():
        if doc["kind"] == "ConfigMap":
            assert not dev_only & set(doc.get("data", {})), path
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert not dev_only & set(_env(container)), path


def test_prod_uses_the_monitoring_component_when_it_exists() -> None:
    (prod,) = _load(K8S / "overlays" / "prod" / "kustomization.yaml")
    listed = "../../components/monitoring" in prod.get("components", [])
    assert listed == (K8S / "components" / "monitoring" / "kustomization.yaml").is_file()


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_the_dev_switch_guards_every_secret_the_service_reads(name: str) -> None:
    """A service must refuse to start outside dev with a secret's public dev default; it only
    checks the secrets SECRETS_BY_SERVICE lists, so that list must hold every guarded secret the
    service's config reads (mta_worker once minted return-path tokens from the public dev ring)."""
    cli_name = SERVICES[name]
    guarded = set(SECRET_DEFAULTS) - {"POSTWIRE_INTERNAL_TOKEN"}  # judged by use, see _uses
    assert guarded & _reads(name) <= set(SECRETS_BY_SERVICE[cli_name])
