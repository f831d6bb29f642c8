"""The type of a servicer method's `context` argument."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

__all__ = ["Context"]

# Request/response type parameters add nothing where a handler uses its context.
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
