"""Wheel-build hook: generate the protobuf/gRPC code (and its mypy-protobuf stubs) into the wheel.

Everything else about the package is in pyproject.toml. The generated code is never committed:
`make gen` writes it to libs/protogen for a source checkout, and this hook writes the same files
into the build directory, so a wheel can never hold code that drifted from protos/.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTOS = ROOT / "protos"


def _plugin(name: str) -> str:
    """A protoc plugin installed beside this interpreter (the build environment's bin/)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: the build needs mypy-protobuf (pyproject build-system)")
    return found


def generate(out: Path) -> None:
    """Run protoc over every .proto file, writing `postwire/...` modules and stubs under `out`."""
    from grpc_tools import protoc  # a build-system requirement, absent at run time

    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    if not sources:
        raise RuntimeError(f"no .proto files under {PROTOS}")
    out = out.resolve()  # protoc runs from protos/ below
    out.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")  # the well-known types
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--mypy_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    cwd = os.getcwd()
    os.chdir(PROTOS)  # protoc resolves the relative source names against -I
    try:
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed; see the messages above")
    finally:
        os.chdir(cwd)
    # The generated modules import each other as `postwire.v1…`: make every level a package,
    # and mark the tree typed so a type checker reads the mypy-protobuf stubs.
    top = out / "postwire"
    for directory in [top, *(p for p in top.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    (top / "py.typed").touch()


class BuildWithProtos(build_py):
    def run(self) -> None:
        super().run()
        # An editable install (`make install`) uses libs/protogen from `make gen` instead.
        if not getattr(self, "editable_mode", False):
            generate(Path(self.build_lib))


setup(cmdclass={"build_py": BuildWithProtos})
