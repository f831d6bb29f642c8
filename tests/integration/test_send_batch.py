"""SendBatch over the public address: each message delivered with its own variables, results in
request order, one render call per template, the batch refused whole (nothing stored) for one bad
message, replays and reused keys per message."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import sys
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2
from postwire.v1 import (
    mail_service_pb2,
    mail_service_pb2_grpc,
    message_pb2,
    template_service_pb2,
    template_service_pb2_grpc,
)

from libs.testing.polling import poll_until
from tests.conftest import create_tenant
from tests.integration.helpers import bad_request_fields, mail, unique, wait_for_mail

MAX_MESSAGES = 1_000


def _vars(**values: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


async def _template(edge, tenant, subject: str) -> str:
    answer = await template_service_pb2_grpc.TemplateServiceStub(edge).CreateTemplate(
        template_service_pb2.CreateTemplateRequest(
            template={
                "name": f"batch-{uuid.uuid4().hex[:8]}",
                "subject": subject,
                "html_body": "<p>Hi {{ name }}</p>",
                "text_body": "Hi {{ name }}, order {{ order }}",
            }
        ),
        metadata=tenant.metadata,
    )
    return answer.template.id


def _templated(rcpt: str, template_id: str, **variables: object) -> mail_service_pb2.SendEmailRequest:
    return mail(
        to=[{"address": rcpt}], subject="", text_body="", template={"id": template_id, "variables": _vars(**variables)}
    )


async def _stored(suite, addresses: list[str]) -> int:
    conn = await asyncpg.connect(suite.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM recipients WHERE address = ANY($1)", addresses))
    finally:
        await conn.close()


async def test_a_batch_delivers_each_message_with_its_own_variables_and_answers_in_order(
    edge, tenant, smtp_sink, otlp
) -> None:
    welcome = await _template(edge, tenant, "Welcome, {{ name }}")
    receipt = await _template(edge, tenant, "Receipt {{ order }}")
    rcpts = [unique(f"b{i}") for i in range(7)]
    messages = [
        _templated(rcpts[0], welcome, name="Ada", order=1),
        mail(to=[{"address": rcpts[1]}], subject="Plain one", text_body="plain body"),
        _templated(rcpts[2], receipt, name="Bo", order=22),
        _templated(rcpts[3], welcome, name="Cy", order=3),
        _templated(rcpts[4], receipt, name="Di", order=44),
        mail(to=[{"address": rcpts[5]}], cc=[{"address": rcpts[6]}], subject="Plain two", metadata={"i": "5"}),
    ]
    answer = await mail_service_pb2_grpc.MailServiceStub(edge).SendBatch(
        mail_service_pb2.SendBatchRequest(messages=messages), metadata=tenant.metadata
    )

    assert [[r.address for r in result.recipients] for result in answer.results] == [
        [rcpts[0]],
        [rcpts[1]],
        [rcpts[2]],
        [rcpts[3]],
        [rcpts[4]],
        [rcpts[5], rcpts[6]],
    ]
    assert all(
        r.state == message_pb2.RECIPIENT_STATE_ACCEPTED for result in answer.results for r in result.recipients
    )
    assert len({result.message_id for result in answer.results}) == len(messages)
    expected = [  # (recipient, its message's position, subject, text part)
        (rcpts[0], 0, "Welcome, Ada", "Hi Ada, order 1"),
        (rcpts[1], 1, "Plain one", "plain body"),
        (rcpts[2], 2, "Receipt 22", "Hi Bo, order 22"),
        (rcpts[3], 3, "Welcome, Cy", "Hi Cy, order 3"),
        (rcpts[4], 4, "Receipt 44", "Hi Di, order 44"),
        (rcpts[5], 5, "Plain two", "Hello there."),
        (rcpts[6], 5, "Plain two", "Hello there."),
    ]
    for rcpt, position, subject, text in expected:
        (received,) = await wait_for_mail(smtp_sink, rcpt)
        parsed = email.message_from_bytes(received.data, policy=email.policy.default)
        assert parsed["Subject"] == subject
        assert parsed.get_body(("plain",)).get_content().strip() == text
        assert parsed["X-Postwire-Message-Id"] == answer.results[position].message_id

    # Rendered once per template at acceptance, never again by the router: in the batch's trace,
    # one RenderMessages per template and no RenderMessage at all, once every message was routed
    # (one router span per message, after which no render could still be under way).
    def batch_trace() -> list:
        spans = otlp.spans()
        # This test's call: other tests' SendBatch traces are in the same receiver.
        roots = [
            s
            for s in spans
            if s.service == "postwire-submission"
            and s.name.endswith("MailService/SendBatch")
            and s.attributes.get("postwire.tenant_id") == tenant.id
        ]
        if not roots:
            return []
        return [s for s in spans if s.trace_id == roots[0].trace_id]

    def template_calls(spans: list) -> list[str]:
        return sorted(s.name.rpartition("/")[2] for s in spans if s.service == "postwire-template")

    async def routed_trace() -> list | None:
        # Each service exports on its own schedule: wait for every message's delivery span and for
        # the template's, whichever service's export comes last under load.
        spans = batch_trace()
        mta = {s.span_id for s in spans if s.service == "postwire-mta_worker"}
        return spans if len(mta) >= len(messages) and len(template_calls(spans)) >= 2 else None

    assert await poll_until(routed_trace, timeout=30, what="the batch's trace through every message's delivery")
    # A render the router made after all would have been exported by now (every 200 ms in tests).
    await asyncio.sleep(1.0)
    assert template_calls(batch_trace()) == ["RenderMessages", "RenderMessages"]


async def test_one_bad_message_refuses_the_batch_naming_its_path_and_nothing_is_stored(
    suite, edge, tenant
) -> None:
    rcpts = [unique() for _ in range(200)]
    messages = [mail(to=[{"address": a}]) for a in rcpts]
    del messages[137].to[:]
    messages[137].to.add(address="not an address")
    messages[150].subject = ""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_service_pb2_grpc.MailServiceStub(edge).SendBatch(
            mail_service_pb2.SendBatchRequest(messages=messages), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["messages[137].to[0].address", "messages[150].subject"]
    assert await _stored(suite, rcpts) == 0


async def test_a_template_that_does_not_render_for_one_message_refuses_the_batch(suite, edge, tenant) -> None:
    welcome = await _template(edge, tenant, "Welcome, {{ name }}")
    rcpts = [unique() for _ in range(3)]
    messages = [_templated(rcpts[0], welcome, name="a", order=1), mail(to=[{"address": rcpts[1]}])]
    messages.append(mail(to=[{"address": rcpts[2]}], subject="", text_body="", template={"id": welcome}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_service_pb2_grpc.MailServiceStub(edge).SendBatch(
            mail_service_pb2.SendBatchRequest(messages=messages), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["messages[2].template.variables"]
    assert await _stored(suite, rcpts) == 0


async def test_too_many_messages_or_recipients_are_refused(suite, edge, tenant) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    too_many = [mail() for _ in range(MAX_MESSAGES + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendBatch(mail_service_pb2.SendBatchRequest(messages=too_many), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["messages"]
    assert "at most 1000 messages" in (caught.value.details() or "")

    # 21 messages of 48 recipients: each within SendEmail's 50, 1,008 across the batch.
    rcpts = [unique() for _ in range(21 * 48)]
    wide = [mail(to=[{"address": a} for a in rcpts[i : i + 48]]) for i in range(0, len(rcpts), 48)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendBatch(mail_service_pb2.SendBatchRequest(messages=wide), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["messages"]
    assert "at most 1000 recipients" in (caught.value.details() or "")
    assert await _stored(suite, rcpts) == 0

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendBatch(mail_service_pb2.SendBatchRequest(), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["messages"]


async def test_a_batch_over_40_mib_is_refused_and_nothing_is_stored(suite, edge, tenant) -> None:
    rcpts = [unique() for _ in range(3)]
    # Each message within SendEmail's 25 MiB; 45 MiB together.
    blob = b"x" * (15 * 1024 * 1024)
    messages = [
        mail(to=[{"address": a}], attachments=[{"filename": "a.bin", "content": blob}]) for a in rcpts
    ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mail_service_pb2_grpc.MailServiceStub(edge).SendBatch(
            mail_service_pb2.SendBatchRequest(messages=messages), metadata=tenant.metadata, timeout=60
        )
    # gRPC refuses a message over the servers' 40 MiB before any handler sees it.
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await _stored(suite, rcpts) == 0


async def test_a_replayed_batch_returns_the_first_ids_and_sends_nothing_more(edge, tenant, smtp_sink) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    rcpts = [unique() for _ in range(3)]
    messages = [mail(to=[{"address": a}], idempotency_key=f"batch-{uuid.uuid4()}") for a in rcpts]
    # The first message was sent alone before: a batch replays it like SendEmail would.
    alone = await stub.SendEmail(messages[0], metadata=tenant.metadata)
    first = await stub.SendBatch(mail_service_pb2.SendBatchRequest(messages=messages), metadata=tenant.metadata)
    again = await stub.SendBatch(mail_service_pb2.SendBatchRequest(messages=messages), metadata=tenant.metadata)
    assert first.results[0].message_id == alone.message_id
    assert [r.message_id for r in again.results] == [r.message_id for r in first.results]
    for rcpt in rcpts:
        await wait_for_mail(smtp_sink, rcpt)
    later = unique()
    await stub.SendEmail(mail(to=[{"address": later}]), metadata=tenant.metadata)
    await wait_for_mail(smtp_sink, later)
    for rcpt in rcpts:
        assert len([m for m in smtp_sink.messages() if rcpt in m.rcpt_tos]) == 1


async def test_a_reused_key_with_a_different_message_refuses_the_batch_naming_it(suite, edge, tenant) -> None:
    stub = mail_service_pb2_grpc.MailServiceStub(edge)
    key = f"batch-{uuid.uuid4()}"
    await stub.SendEmail(mail(idempotency_key=key, subject="one"), metadata=tenant.metadata)
    rcpts = [unique() for _ in range(3)]
    messages = [mail(to=[{"address": a}]) for a in rcpts]
    messages[1].idempotency_key = key
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendBatch(mail_service_pb2.SendBatchRequest(messages=messages), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert bad_request_fields(caught.value) == ["messages[1].idempotency_key"]
    assert await _stored(suite, rcpts) == 0

    # The same key twice in one batch is the caller's mistake, named at the second use.
    twice = [mail(idempotency_key=f"twice-{key}"), mail(), mail(idempotency_key=f"twice-{key}")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendBatch(mail_service_pb2.SendBatchRequest(messages=twice), metadata=tenant.metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(caught.value) == ["messages[2].idempotency_key"]


async def test_the_readme_send_batch_example_runs_as_written(suite, smtp_sink) -> None:
    tenant = await create_tenant(suite)
    async with grpc.aio.insecure_channel(suite.ports.addr("edge")) as edge:
        await template_service_pb2_grpc.TemplateServiceStub(edge).CreateTemplate(
            template_service_pb2.CreateTemplateRequest(
                template={"name": "receipt", "subject": "Receipt {{ order }}", "text_body": "Thanks, {{ name }}."}
            ),
            metadata=tenant.metadata,
        )
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- send-batch:start -->", 1)[1].split("<!-- send-batch:end -->", 1)[0]
    (script,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    script = script.replace("127.0.0.1:50051", suite.ports.addr("edge"))
    prelude = f'set -eo pipefail\nG={Path(sys.executable).parent / "grpcurl"}\nAUTH="authorization: Bearer {tenant.api_key}"\n'
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", prelude + script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, (err + out).decode()
    results = json.loads(out)["results"]
    assert [r["recipients"][0]["address"] for r in results] == ["ada@example.com", "bo@example.com"]
    # Other tests write to ada@example.com too (the README's examples share addresses): take the
    # copy of this batch's first message.
    first_id = results[0].get("messageId") or results[0]["message_id"]

    async def this_batchs_copy() -> list:
        return [
            m
            for m in await wait_for_mail(smtp_sink, "ada@example.com")
            if email.message_from_bytes(m.data, policy=email.policy.default)["X-Postwire-Message-Id"] == first_id
        ]

    (ada,) = await poll_until(this_batchs_copy, timeout=30, what="this batch's message to ada@example.com")
    parsed = email.message_from_bytes(ada.data, policy=email.policy.default)
    assert parsed["Subject"] == "Receipt 1001"
    assert parsed.get_body(("plain",)).get_content().strip() == "Thanks, Ada."
