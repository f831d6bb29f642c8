"""One tenant's template cannot stall another's: renders run in a pool of worker processes with a
hard wall-clock kill and a memory cap, and the service keeps answering while they spin."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from postwire.v1 import template_service_pb2, template_service_pb2_grpc

from tests.conftest import create_tenant

SPIN = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"


def _vars(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


async def _create(edge, tenant, **fields) -> template_service_pb2.Template:
    template = {
        "name": f"iso-{uuid.uuid4().hex[:8]}",
        "subject": "Hello {{ name }}",
        "html_body": "<p>Hi {{ name }}</p>",
        "text_body": "",
        **fields,
    }
    answer = await template_service_pb2_grpc.TemplateServiceStub(edge).CreateTemplate(
        template_service_pb2.CreateTemplateRequest(template=template), metadata=tenant.metadata
    )
    return answer.template


async def _render(
    edge, tenant, name: str, **variables: object
) -> template_service_pb2.RenderTemplateResponse:
    return await template_service_pb2_grpc.TemplateServiceStub(edge).RenderTemplate(
        template_service_pb2.RenderTemplateRequest(template=name, variables=_vars(name="Ada", **variables)),
        metadata=tenant.metadata,
        timeout=60,
    )


async def _render_error(edge, tenant, name: str, **variables: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _render(edge, tenant, name, **variables)
    return caught.value


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces; the ppid follows it.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_runaway_renders_do_not_stall_other_tenants_or_health(suite, edge, tenant) -> None:
    spin = await _create(edge, tenant, html_body=SPIN)
    other = await create_tenant(suite)
    small = await _create(edge, other)
    runaways = [asyncio.create_task(_render_error(edge, tenant, spin.name)) for _ in range(2)]
    # Let both runaways reach the service; the checks below are about order, not this pause.
    await asyncio.sleep(0.5)
    async with grpc.aio.insecure_channel(suite.ports.addr("template")) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert not any(r.done() for r in runaways), "the health check waited for a runaway render"
    answer = await _render(edge, other, small.name)
    assert answer.html_body == "<p>Hi Ada</p>"
    assert not any(r.done() for r in runaways), "another tenant's render waited for a runaway render"
    for error in await asyncio.gather(*runaways):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "rendering took longer than" in (error.details() or "")
        assert spin.name in (error.details() or "")


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10**9 }}",
        # No `*`: the sandbox's repetition bound never sees it, only the memory cap does. It
        # doubles a 1,000-character variable 20 times, to 1 GB, above the default 512 MB cap.
        "{% set ns = namespace(s=seed) %}{% for i in range(20) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
        "{{ ns.s|length }}",
    ],
)
async def test_a_memory_bomb_is_refused_and_the_service_keeps_answering(edge, tenant, source: str) -> None:
    bomb = await _create(edge, tenant, html_body=source)
    error = await _render_error(edge, tenant, bomb.name, seed="a" * 1000)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bomb.name in (error.details() or "")
    ok = await _create(edge, tenant)
    assert (await _render(edge, tenant, ok.name)).html_body == "<p>Hi Ada</p>"


async def test_an_error_raised_by_template_code_names_the_template_and_line(edge, tenant) -> None:
    broken = await _create(edge, tenant, html_body="<p>one</p>\n<p>{{ '{}'.format() }}</p>")
    error = await _render_error(edge, tenant, broken.name)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert broken.name in (error.details() or "")
    assert "line 2" in (error.details() or "")


async def test_a_killed_worker_is_replaced_before_the_next_render(suite, edge, tenant) -> None:
    ok = await _create(edge, tenant)
    assert (await _render(edge, tenant, ok.name)).html_body == "<p>Hi Ada</p>"
    workers = _children(suite.processes["template"].pid)
    assert workers, "renders run in worker processes"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    for _ in range(4):
        assert (await _render(edge, tenant, ok.name)).html_body == "<p>Hi Ada</p>"
    assert not workers & _children(suite.processes["template"].pid)


async def test_stopping_the_service_leaves_no_worker_behind(suite, edge, tenant) -> None:
    ok = await _create(edge, tenant)
    await _render(edge, tenant, ok.name)
    workers = _children(suite.processes["template"].pid)
    assert workers
    try:
        assert suite.processes["template"].stop(timeout=30) == 0
        assert not [pid for pid in workers if _alive(pid)]
    finally:
        suite.start_service("template")
    assert (await _render(edge, tenant, ok.name)).html_body == "<p>Hi Ada</p>"
