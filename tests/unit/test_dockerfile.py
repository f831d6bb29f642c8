"""Static checks of the Dockerfile against the manifests and the README (no docker daemon here).

The image runs as the uid every manifest's securityContext names, starts `postwire`, installs the
wheel into a slim base pinned by tag (plus BASE_DIGEST) without compilers, and carries the name
the overlays deploy; hadolint finds nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
COMPILERS = ("gcc", "g++", "clang", "build-essential", "cc ", "make ", "apt-get", "apk ")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [Instruction(*[*line.split(None, 1), ""][:2]) for line in lines]


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for ins in parsed:
        if ins.keyword.upper() == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


DOCKERFILE = instructions((REPO / "Dockerfile").read_text())
STAGES = stages(DOCKERFILE)
FINAL = STAGES[-1]


def final(keyword: str) -> list[str]:
    return [i.args for i in FINAL if i.keyword.upper() == keyword]


WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def workloads() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload under deploy/k8s."""
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in WORKLOADS:
                spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
                yield f"{path.relative_to(K8S)}:{doc['metadata']['name']}", spec["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def test_the_image_runs_as_the_uid_and_gid_every_manifest_names() -> None:
    (user,) = final("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) != 0
    found = list(workloads())
    assert len(found) >= 8  # one per service at least
    for name, pod in found:
        # The pod names the uid and gid; a container may repeat them but never differ.
        assert pod["securityContext"]["runAsUser"] == int(uid), name
        assert pod["securityContext"]["runAsGroup"] == int(gid), name
        for container in containers(pod):
            context = container.get("securityContext", {})
            assert context.get("runAsUser", int(uid)) == int(uid), (name, container["name"])
            assert context.get("runAsGroup", int(gid)) == int(gid), (name, container["name"])
    # The user exists in the image, with that uid and gid.
    created = " ".join(final("RUN"))
    assert f"--uid {uid}" in created and f"--gid {gid}" in created


def test_the_entrypoint_is_postwire_in_exec_form() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    assert json.loads(entrypoint) == ["postwire"]
    # The manifests run `postwire serve <service>` / `postwire migrate` as their command.
    commands = [c.get("command") for _, pod in workloads() for c in containers(pod)]
    assert commands and all(c and c[0] == "postwire" for c in commands), commands


def test_multi_stage_builds_the_wheel_and_installs_it_into_a_pinned_slim_base() -> None:
    assert len(STAGES) >= 2
    assert any(
        i.keyword == "ARG" and i.args.startswith("BASE_DIGEST")
        for i in DOCKERFILE[: DOCKERFILE.index(STAGES[0][0])]
    )
    for stage in STAGES:
        image = stage[0].args.split()[0]
        assert re.fullmatch(r"python:3\.11-slim-[a-z]+\$\{BASE_DIGEST:\+@\}\$\{BASE_DIGEST\}", image), image
    builder = " ".join(i.args for i in STAGES[0] if i.keyword == "RUN")
    assert "pip wheel" in builder
    installs = " ".join(final("RUN"))
    # The final stage installs the builder's wheels offline: the same wheel, no source, no network.
    assert "--no-index" in installs and "from=builder" in installs and "postwire==" in installs
    assert not final("COPY"), "the final stage copies nothing in: no source tree"


def test_the_final_stage_installs_this_version_of_the_wheel() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"postwire=={version}" in " ".join(final("RUN"))


def test_the_final_stage_installs_no_compilers() -> None:
    for args in final("RUN"):
        assert not any(word in args + " " for word in COMPILERS), args


def test_the_context_holds_only_what_the_builder_copies() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = {src.rstrip("/") for i in STAGES[0] if i.keyword == "COPY" for src in i.args.split()[:-1]}
    assert copied == included


def test_the_overlays_deploy_the_image_the_readme_builds() -> None:
    readme = (REPO / "README.md").read_text().replace("\\\n", " ")
    built = {m.group(1).rsplit(":", 1)[0] for m in re.finditer(r"docker build\b[^\n]*?-t\s+(\S+)", readme)}
    assert len(built) == 1, built
    overlays = sorted((K8S / "overlays").glob("*/kustomization.yaml"))
    assert overlays
    for path in overlays:
        names = {image.get("newName", image["name"]) for image in yaml.safe_load(path.read_text())["images"]}
        assert names == built, f"{path.relative_to(REPO)} deploys {names}, README builds {built}"
    images = {c["image"].rsplit(":", 1)[0] for _, pod in workloads() for c in containers(pod)}
    assert images == built, images


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
