"""What a template is for; pure. The values are the public proto's, so the two cannot drift."""

from __future__ import annotations

from enum import IntEnum

from postwire.v1 import template_pb2

from libs.errors import InvalidArgument

__all__ = ["Kind"]


class Kind(IntEnum):
    MESSAGE = template_pb2.TEMPLATE_KIND_MESSAGE
    LAYOUT = template_pb2.TEMPLATE_KIND_LAYOUT
    PARTIAL = template_pb2.TEMPLATE_KIND_PARTIAL

    @classmethod
    def of(cls, value: int) -> Kind:
        """The kind a request names; TEMPLATE_KIND_UNSPECIFIED means a message template."""
        if value == template_pb2.TEMPLATE_KIND_UNSPECIFIED:
            return cls.MESSAGE
        try:
            return cls(value)
        except ValueError:
            names = ", ".join(
                template_pb2.TemplateKind.Name(template_pb2.TemplateKind.ValueType(k)) for k in cls
            )
            raise InvalidArgument([("template.kind", f"must be one of {names}")]) from None
