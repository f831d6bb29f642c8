"""InboundConfig from an environment mapping: defaults and start-up errors that name the variable."""

from __future__ import annotations

import pytest

from libs.config import ConfigError
from services.inbound.config import InboundConfig


def test_defaults() -> None:
    config = InboundConfig.from_env({})
    assert (config.smtp_host, config.smtp_port) == ("127.0.0.1", 2526)
    assert config.common.listen == "127.0.0.1:50067"
    assert config.max_connections_per_ip == 10
    assert (config.tls_cert, config.tls_key) == ("", "")
    assert config.return_path.host == "bounces.postwire.localhost"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"POSTWIRE_INBOUND_TLS_CERT": "/tls/cert.pem"}, "POSTWIRE_INBOUND_TLS_KEY"),
        ({"POSTWIRE_INBOUND_TLS_KEY": "/tls/key.pem"}, "POSTWIRE_INBOUND_TLS_CERT"),
        ({"POSTWIRE_INBOUND_LISTEN": "2526"}, "POSTWIRE_INBOUND_LISTEN"),
        ({"POSTWIRE_INBOUND_MAX_CONNECTIONS_PER_IP": "0"}, "POSTWIRE_INBOUND_MAX_CONNECTIONS_PER_IP"),
    ],
)
def test_bad_settings_stop_the_start(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        InboundConfig.from_env(env)
