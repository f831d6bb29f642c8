"""A stream or unsubscribe-group name means the same everywhere it is taken: SendEmail, admission,
suppressions and tenant limits accept and refuse exactly the same names (one rule, libs/mail/stream_names.py)."""

from __future__ import annotations

import grpc
import pytest
from postwire.internal.v1 import policy_service_pb2, policy_service_pb2_grpc
from postwire.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    mail_service_pb2_grpc,
    suppression_service_pb2,
    suppression_service_pb2_grpc,
)

from tests.conftest import ADMIN_TOKEN, INTERNAL_AUTH
from tests.integration.helpers import bad_request_fields, mail, unique

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
UNSUBSCRIBE = suppression_service_pb2.SUPPRESSION_REASON_UNSUBSCRIBE

NAMES = [
    ("news", True),
    ("product-news", True),
    ("news_2026", True),
    ("9lives", True),
    ("x" * 64, True),
    ("_news", False),
    ("-news", False),
    ("News", False),
    ("news letter", False),
    ("news.", False),
    ("x" * 65, False),
]


async def _outcome(call: object) -> str | None:
    """None when accepted, else the first field the INVALID_ARGUMENT names."""
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        return bad_request_fields(exc)[0]
    return None


@pytest.mark.parametrize(("name", "valid"), NAMES, ids=[n[:12] for n, _ in NAMES])
async def test_every_api_takes_the_same_stream_and_group_names(
    suite, edge, tenant, name: str, valid: bool
) -> None:
    mail_stub = mail_service_pb2_grpc.MailServiceStub(edge)
    suppressions = suppression_service_pb2_grpc.SuppressionServiceStub(edge)
    admin = admin_service_pb2_grpc.AdminServiceStub(edge)
    async with grpc.aio.insecure_channel(suite.ports.addr("policy")) as channel:
        policy = policy_service_pb2_grpc.PolicyServiceStub(channel)
        outcomes = {
            "SendEmail stream": await _outcome(
                mail_stub.SendEmail(mail(stream=name), metadata=tenant.metadata)
            ),
            "SendEmail group": await _outcome(
                mail_stub.SendEmail(mail(unsubscribe_group=name), metadata=tenant.metadata)
            ),
            "AdmitMessage stream": await _outcome(
                policy.AdmitMessage(
                    policy_service_pb2.AdmitMessageRequest(
                        tenant_id=tenant.id, stream=name, recipients=[unique()], from_domain="example.com"
                    ),
                    metadata=INTERNAL_AUTH,
                )
            ),
            "AdmitMessage group": await _outcome(
                policy.AdmitMessage(
                    policy_service_pb2.AdmitMessageRequest(
                        tenant_id=tenant.id,
                        stream="transactional",
                        unsubscribe_group=name,
                        recipients=[unique()],
                        from_domain="example.com",
                    ),
                    metadata=INTERNAL_AUTH,
                )
            ),
            "BatchCreateSuppressions": await _outcome(
                suppressions.BatchCreateSuppressions(
                    suppression_service_pb2.BatchCreateSuppressionsRequest(
                        suppressions=[{"address": unique(), "reason": UNSUBSCRIBE, "unsubscribe_group": name}]
                    ),
                    metadata=tenant.metadata,
                )
            ),
            "ListSuppressions": await _outcome(
                suppressions.ListSuppressions(
                    suppression_service_pb2.ListSuppressionsRequest(unsubscribe_group=name),
                    metadata=tenant.metadata,
                )
            ),
            "CreateTenant limits": await _outcome(
                admin.CreateTenant(
                    admin_service_pb2.CreateTenantRequest(
                        tenant={"name": "named", "limits": [{"stream": name, "recipients_per_second": 1000}]}
                    ),
                    metadata=ADMIN,
                )
            ),
        }
    expected = {
        "SendEmail stream": "stream",
        "SendEmail group": "unsubscribe_group",
        "AdmitMessage stream": "stream",
        "AdmitMessage group": "unsubscribe_group",
        "BatchCreateSuppressions": "suppressions[0].unsubscribe_group",
        "ListSuppressions": "unsubscribe_group",
        "CreateTenant limits": "tenant.limits[0].stream",
    }
    assert outcomes == ({k: None for k in expected} if valid else expected)
