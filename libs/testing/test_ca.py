"""A certificate authority for TLS tests (a thin layer on trustme): leaf certificates for scripted
SMTP servers, and the CA bundle a client is told to trust (POSTWIRE_SMARTHOST_CA_FILE,
POSTWIRE_MX_CA_FILE). A second instance plays an authority the client does not trust."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import trustme

__all__ = ["TestCa"]


class TestCa:
    """One CA; each call to server_context() issues a fresh leaf for the names given."""

    # Not a test class, even when a test module imports it.
    __test__ = False

    def __init__(self, organization: str = "Postwire test CA") -> None:
        self._ca = trustme.CA(organization_name=organization)
        self._name = f"ca-{uuid.uuid4().hex[:8]}.pem"

    @property
    def pem(self) -> bytes:
        """The CA certificate, PEM encoded."""
        return self._ca.cert_pem.bytes()

    def server_context(self, hostname: str, /, *more: str) -> ssl.SSLContext:
        """A server-side context presenting a leaf for ``hostname`` (and ``more`` names or IPs)."""
        # Purpose.CLIENT_AUTH is the server side: no client certificate asked for.
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(hostname, *more).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this CA only."""
        # PROTOCOL_TLS_CLIENT verifies chain and hostname and, unlike create_default_context(),
        # loads no system CAs.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._ca.configure_trust(context)
        return context

    def ca_file(self, directory: Path) -> Path:
        """Write the CA bundle into ``directory`` and return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self._name
        path.write_bytes(self.pem)
        return path
