"""postwire.v1.MailService: proto ↔ domain only; the decisions live in accept.py, accept_batch.py
and get_message.py."""

from __future__ import annotations

from postwire.v1 import mail_service_pb2, mail_service_pb2_grpc

from libs.errors import required
from libs.grpcx.auth import Caller, Context, KeyResolver, bearer_token
from services.submission.accept import Accept, Replayed
from services.submission.accept_batch import AcceptBatch
from services.submission.get_message import GetMessage
from services.submission.message_protos import get_message_response, replay_response, send_response

__all__ = ["MailApi"]


class MailApi(mail_service_pb2_grpc.MailServiceServicer):
    def __init__(
        self, *, accept: Accept, accept_batch: AcceptBatch, get_message: GetMessage, keys: KeyResolver
    ) -> None:
        self._accept = accept
        self._accept_batch = accept_batch
        self._get_message = get_message
        self._keys = keys

    async def SendEmail(
        self, request: mail_service_pb2.SendEmailRequest, context: Context
    ) -> mail_service_pb2.SendEmailResponse:
        # Token presence first, the key itself only once the request is known to be well-formed
        # (README, "checks in this order"): the use case calls `authorize` after validating.
        bearer_token(context)

        async def authorize() -> Caller:
            return await self._keys.authorize(context, "send")

        result = await self._accept.accept(request, authorize=authorize)
        if isinstance(result, Replayed):
            return replay_response(result.message)
        return send_response(result.message_id, result.recipients)

    async def GetMessage(
        self, request: mail_service_pb2.GetMessageRequest, context: Context
    ) -> mail_service_pb2.GetMessageResponse:
        caller = await self._keys.authorize(context, "messages:read")
        message_id = required(request.message_id, "message_id", "a message id is required")
        view = await self._get_message.get(caller.tenant_id, message_id)
        return get_message_response(view.message, view.timeline)

    async def SendBatch(
        self, request: mail_service_pb2.SendBatchRequest, context: Context
    ) -> mail_service_pb2.SendBatchResponse:
        bearer_token(context)

        async def authorize() -> Caller:
            return await self._keys.authorize(context, "send")

        results = await self._accept_batch.accept(request, authorize=authorize)
        return mail_service_pb2.SendBatchResponse(
            results=[
                replay_response(r.message) if isinstance(r, Replayed) else send_response(r.message_id, r.recipients)
                for r in results
            ]
        )
