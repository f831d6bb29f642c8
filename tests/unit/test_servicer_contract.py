"""The import contract that keeps servicers apart names every servicer module there is."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_servicer_module_is_in_the_independence_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["name"] == "Servicers do not import each other"]
    servicers = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "services").rglob("*.py")
        if re.search(r"^class \w+\(\w+_pb2_grpc\.\w+Servicer\):", path.read_text(), re.MULTILINE)
    }
    assert servicers, "no servicer found: the pattern above no longer matches the code"
    assert servicers == set(contract["modules"])
