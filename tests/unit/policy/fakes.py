"""Hand-written fakes of the policy use cases' ports; they keep what they were given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from libs.request_ids import RequestId


class OnceStore:
    """`once` as the real stores run it, without a database: the first answer per request id is
    kept (sealed as the caller asks); a retry gets it back without running the create."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.answers: dict[tuple[str, str, str], bytes] = {}

    async def once(
        self,
        rid: RequestId | None,
        create: Callable[[Any], Awaitable[bytes]],
        *,
        seal: Callable[[bytes], bytes] = lambda b: b,
        unseal: Callable[[bytes], bytes] = lambda b: b,
    ) -> bytes:
        key = (rid.owner, rid.method, rid.value) if rid else None
        if key is not None and key in self.answers:
            self.log.append("replay")
            return unseal(self.answers[key])
        answer = await create(self)
        if key is not None:
            self.answers[key] = seal(answer)
        return answer


class XorSealer:
    """Stands in for libs.domain_keys.Sealer: reversible, and visibly not the plaintext."""

    def __init__(self) -> None:
        self.bound: list[str] = []

    def seal(self, plaintext: bytes, associated: str, /) -> bytes:
        self.bound.append(associated)
        return b"sealed:" + bytes(b ^ 0x5A for b in plaintext)

    def open(self, sealed: bytes, associated: str, /) -> bytes:
        assert sealed.startswith(b"sealed:")
        return bytes(b ^ 0x5A for b in sealed[len(b"sealed:") :])
