"""SendBatch's use case: SendEmail's rules (acceptance.py) for up to 1,000 messages at once, each
step run once for the whole batch.

validate all → authorize → replay check (one query) → send_time → one render call per
(template, version) → one admission decision → one transaction → publishes pipelined.

The batch is decided whole: one bad message, one reused key with a different request, a refused
admission — nothing is stored and the call fails naming `messages[i].<field>`. Messages whose
idempotency key was already stored with the same request are answered as replays and cost
nothing; only the rest are rendered, admitted and stored. Results come back in request order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from postwire.internal.v1 import bus_pb2
from postwire.v1 import mail_service_pb2, message_pb2

from libs.errors import FailedPrecondition, InvalidArgument, Unavailable
from libs.mail.states import RecipientState
from libs.runtime import log_fields
from services.submission.accept import Authorize
from services.submission.acceptance import (
    Accepted,
    Admission,
    AdmissionQuery,
    PinnedTemplate,
    Replayed,
    Stamp,
    admission_query,
    pin,
    replay,
    request_hash,
    routes_now,
)
from services.submission.messages import MessageRow, NewMessage
from services.submission.validation import ValidatedSend, check_batch_send_times, validate_batch

__all__ = ["AcceptBatch", "BatchPolicy", "BatchPublisher", "BatchStore", "BatchTemplates", "Outgoing"]

_log = logging.getLogger(__name__)


class BatchStore(Protocol):
    async def find_by_idempotency_keys(
        self, tenant_id: str, keys: Sequence[str]
    ) -> dict[str, MessageRow]: ...

    async def accept_many(
        self, batch: Sequence[NewMessage], events: Sequence[bus_pb2.EventEnvelope]
    ) -> list[str] | None:
        """The stored ids in order, or None (nothing stored) when a concurrent call stored one of
        the idempotency keys first."""
        ...


class BatchPolicy(Protocol):
    async def admit_batch(self, queries: Sequence[AdmissionQuery]) -> list[Admission]:
        """One decision for all: every query admitted, or an error. Violations name
        `messages[i]` by the position in `queries`. Fails closed like Policy.admit."""
        ...


class BatchTemplates(Protocol):
    async def pin_group(
        self, tenant_id: str, refs: Sequence[message_pb2.TemplateReference]
    ) -> list[PinnedTemplate | InvalidArgument]:
        """Render references naming one template and version in one call (compiled once); a
        reference that does not render gets its violations, named from `template`."""
        ...


@dataclass(frozen=True, slots=True)
class Outgoing:
    message_id: str
    events: Sequence[bus_pb2.EventEnvelope]
    route: bool


class BatchPublisher(Protocol):
    async def publish_many_after_commit(self, outgoing: Sequence[Outgoing]) -> None:
        """Every publish in flight at once, within one publish budget; the sweepers repair a miss."""
        ...


@dataclass(slots=True)
class _Fresh:
    """A message of the batch that is not a replay: to be rendered, admitted and stored."""

    index: int
    original: mail_service_pb2.SendEmailRequest
    validated: ValidatedSend
    hashed: bytes
    pinned: PinnedTemplate | None = None


class AcceptBatch:
    def __init__(
        self,
        *,
        store: BatchStore,
        policy: BatchPolicy,
        templates: BatchTemplates,
        publisher: BatchPublisher,
        stamp: Stamp,
    ) -> None:
        self._store = store
        self._policy = policy
        self._templates = templates
        self._publisher = publisher
        self._stamp = stamp

    async def accept(
        self, request: mail_service_pb2.SendBatchRequest, /, *, authorize: Authorize
    ) -> list[Accepted | Replayed]:
        validated = validate_batch(request)
        tenant_id = (await authorize()).tenant_id
        hashes = [request_hash(m) for m in request.messages]
        results: list[Accepted | Replayed | None] = [None] * len(validated)
        replays = await self._replays(tenant_id, request.messages, hashes)
        fresh: list[_Fresh] = []
        for i, (original, checked) in enumerate(zip(request.messages, validated, strict=True)):
            if i in replays:
                results[i] = replays[i]
            else:
                fresh.append(_Fresh(i, original, checked, hashes[i]))
        if not fresh:
            return _complete(results)

        now = self._stamp.clock()
        check_batch_send_times([(f.index, f.original) for f in fresh], now=now)
        await self._render(tenant_id, fresh)
        admissions = await self._admit(tenant_id, fresh)

        built = [
            self._stamp.new_message(tenant_id, f.original, f.validated, f.hashed, admission, f.pinned, now)
            for f, admission in zip(fresh, admissions, strict=True)
        ]
        stored = await self._store.accept_many(
            [message for message, _ in built], [e for _, events in built for e in events]
        )
        if stored is None:
            return await self._lost_race(tenant_id, request.messages, hashes, results, fresh)

        # Durable from the commit above; publishes that miss are the sweepers' (see accept.py).
        await self._publisher.publish_many_after_commit(
            [
                Outgoing(message_id, events, route=routes_now(message))
                for message_id, (message, events) in zip(stored, built, strict=True)
            ]
        )
        for f, message_id, (message, _) in zip(fresh, stored, built, strict=True):
            results[f.index] = Accepted(message_id=message_id, recipients=tuple(message.recipients))
        # One line per batch; counts only, never an address.
        _log.info(
            "batch accepted",
            extra=log_fields(
                tenant_id=tenant_id,
                messages=len(stored),
                replayed=len(replays),
                recipients=sum(len(m.recipients) for m, _ in built),
                suppressed=sum(
                    state == RecipientState.SUPPRESSED for m, _ in built for _, _, state in m.recipients
                ),
            ),
        )
        return _complete(results)

    async def _replays(
        self,
        tenant_id: str,
        messages: Sequence[mail_service_pb2.SendEmailRequest],
        hashes: Sequence[bytes],
    ) -> dict[int, Replayed]:
        """Messages already stored under their key, by index; a key stored with a different
        request refuses the batch."""
        keyed = {m.idempotency_key: i for i, m in enumerate(messages) if m.idempotency_key}
        found = await self._store.find_by_idempotency_keys(tenant_id, list(keyed))
        return {
            keyed[key]: replay(row, hashes[keyed[key]], field=f"messages[{keyed[key]}].idempotency_key")
            for key, row in found.items()
        }

    async def _render(self, tenant_id: str, fresh: Sequence[_Fresh]) -> None:
        """One render call per (template, version): compiled once, rendered per message."""
        groups: dict[tuple[str, str, int], list[_Fresh]] = {}
        for f in fresh:
            if f.original.HasField("template"):
                ref = f.validated.request.template
                groups.setdefault((ref.id, ref.name, ref.version), []).append(f)
        violations: list[tuple[str, str]] = []
        for members in groups.values():
            try:
                pinned = await self._templates.pin_group(
                    tenant_id, [f.validated.request.template for f in members]
                )
            except InvalidArgument as exc:
                # A refusal for the whole template (e.g. not a message template) names its first user.
                violations.extend((f"messages[{members[0].index}].{field}", d) for field, d in exc.violations)
                continue
            for f, result in zip(members, pinned, strict=True):
                if isinstance(result, InvalidArgument):
                    violations.extend((f"messages[{f.index}].{field}", d) for field, d in result.violations)
                else:
                    f.pinned = result
                    pin(f.validated.request.template, result)
        if violations:
            raise InvalidArgument(violations)

    async def _admit(self, tenant_id: str, fresh: Sequence[_Fresh]) -> list[Admission]:
        try:
            return await self._policy.admit_batch([admission_query(tenant_id, f.validated) for f in fresh])
        # Policy numbers the messages it was asked about; name them as the caller sent them.
        except InvalidArgument as exc:
            raise InvalidArgument([(_renumber(field, fresh), d) for field, d in exc.violations]) from None
        except FailedPrecondition as exc:
            exc.violations = [(kind, _renumber(field, fresh), d) for kind, field, d in exc.violations]
            raise

    async def _lost_race(
        self,
        tenant_id: str,
        messages: Sequence[mail_service_pb2.SendEmailRequest],
        hashes: Sequence[bytes],
        results: list[Accepted | Replayed | None],
        fresh: Sequence[_Fresh],
    ) -> list[Accepted | Replayed]:
        """A concurrent call stored one of the keys first and nothing of ours was stored. When
        that call stored every message we meant to, answer as its replay; otherwise the caller
        retries (with the same keys, the stored messages then replay)."""
        replays = await self._replays(tenant_id, messages, hashes)
        for f in fresh:
            if f.index not in replays:
                raise Unavailable("a concurrent call stored part of this batch; retry it", retry_after=0.1)
            results[f.index] = replays[f.index]
        return _complete(results)


def _renumber(field: str, fresh: Sequence[_Fresh]) -> str:
    prefix, sep, rest = field.partition("].")
    if sep and prefix.startswith("messages[") and prefix[len("messages[") :].isdigit():
        position = int(prefix[len("messages[") :])
        if position < len(fresh):
            return f"messages[{fresh[position].index}].{rest}"
    return field


def _complete(results: Sequence[Accepted | Replayed | None]) -> list[Accepted | Replayed]:
    done = [r for r in results if r is not None]
    if len(done) != len(results):
        raise AssertionError("a batch result is missing")
    return done
