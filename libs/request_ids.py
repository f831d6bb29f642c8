"""Retry-safe writes: idempotency keys on sends and AIP-155 `request_id`s on every Create method.

One rule for what a key may be (`key_problem`), and one way a Create remembers its answer
(`libs/request_id_store.py`): in the transaction that creates the resource, `claim` inserts the (owner, method, request id) row — a
concurrent call with the same id waits on that row and then sees the committed answer — and
`remember` stores the serialized response. A retry with the same request gets those bytes back;
the same id with a different request is ALREADY_EXISTS naming `request_id`. A call that fails
rolls the claim back with everything else, so only successes are remembered.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from google.protobuf.message import Message

from libs.errors import InvalidArgument

__all__ = ["MAX_KEY_LENGTH", "RequestId", "fingerprint", "key_problem"]

MAX_KEY_LENGTH = 256
_KEY = re.compile(r"[\x20-\x7e]+")


def key_problem(key: str) -> str:
    """Why `key` cannot be an idempotency key or request id; "" when it can."""
    if len(key) > MAX_KEY_LENGTH:
        return f"at most {MAX_KEY_LENGTH} characters"
    if not _KEY.fullmatch(key):
        return "printable ASCII characters only"
    return ""


def fingerprint(request: Message, field: str = "request_id") -> bytes:
    """sha256 of the request without its id: what "the same request" means on a retry."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField(field)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


@dataclass(frozen=True, slots=True)
class RequestId:
    owner: str  # tenant id, or libs.page_tokens.ADMIN_CALLER for AdminService
    method: str  # e.g. "CreateTemplate": ids are per method, as clients generate them per call
    value: str
    fingerprint: bytes

    @classmethod
    def of(cls, owner: str, method: str, request: Message, field: str = "request_id") -> RequestId | None:
        """The request's id, or None when it has none; INVALID_ARGUMENT when it is malformed."""
        value = str(getattr(request, field))
        if not value:
            return None
        problem = key_problem(value)
        if problem:
            raise InvalidArgument([(field, problem)])
        return cls(owner, method, value, fingerprint(request, field))
