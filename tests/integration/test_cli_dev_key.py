"""`postwire up`'s dev tenant is made through AdminService and its key reused while it works."""

from __future__ import annotations

import stat
from pathlib import Path

from postwire.v1 import mail_service_pb2_grpc

from services.cli import _dev_internal_token, _dev_key
from tests.conftest import ADMIN_TOKEN, INTERNAL_TOKEN
from tests.integration.helpers import mail


async def test_dev_key_is_created_once_with_every_scope_and_reused(suite, edge, tmp_path: Path) -> None:
    key_file = tmp_path / "dev-api-key"
    addrs = (suite.ports.addr("policy"), suite.ports.addr("edge"), key_file)
    tokens = {"admin_token": ADMIN_TOKEN, "internal_token": INTERNAL_TOKEN}
    first = await _dev_key(*addrs, **tokens)
    assert key_file.read_text().strip() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert await _dev_key(*addrs, **tokens) == first
    sent = await mail_service_pb2_grpc.MailServiceStub(edge).SendEmail(
        mail(), metadata=(("authorization", f"Bearer {first}"),)
    )
    assert sent.message_id


def test_internal_token_file_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "internal-token"
    token = _dev_internal_token(path)
    assert len(token) > 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _dev_internal_token(path) == token
