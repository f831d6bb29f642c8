"""mta_worker's lane and destination settings: defaults, and a bad value fails fast by name."""

from __future__ import annotations

import pytest

from libs.config import ConfigError
from services.mta_worker.config import WorkerConfig
from services.mta_worker.smtp_session import Timeouts, TlsMode


def test_defaults() -> None:
    config = WorkerConfig.from_env({})
    assert config.routing.mode.value == "mx"
    assert (config.concurrency, config.retry_concurrency, config.slots_per_destination) == (32, 8, 16)


def test_settings_are_read() -> None:
    config = WorkerConfig.from_env(
        {"POSTWIRE_RETRY_CONCURRENCY": "3", "POSTWIRE_MAX_SLOTS_PER_DESTINATION": "5"}
    )
    assert (config.retry_concurrency, config.slots_per_destination) == (3, 5)


@pytest.mark.parametrize("name", ["POSTWIRE_RETRY_CONCURRENCY", "POSTWIRE_MAX_SLOTS_PER_DESTINATION"])
@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        WorkerConfig.from_env({name: value})


# Delivery settings (issue 10): modes, relay TLS and AUTH, per-phase time-outs.

RELAY = {"POSTWIRE_DELIVERY_MODE": "smarthost", "POSTWIRE_SMARTHOST": "relay.example.net:587"}


def test_relay_defaults_to_verified_starttls_without_credentials() -> None:
    config = WorkerConfig.from_env(RELAY)
    assert config.relay.tls is TlsMode.REQUIRED
    assert (config.relay.username, config.relay.password, config.relay.ca_file) == (None, None, None)


@pytest.mark.parametrize(
    ("raw", "mode"), [("implicit", TlsMode.IMPLICIT), ("none", TlsMode.NONE), ("STARTTLS", TlsMode.REQUIRED)]
)
def test_relay_tls_modes(raw: str, mode: TlsMode) -> None:
    assert WorkerConfig.from_env({**RELAY, "POSTWIRE_SMARTHOST_TLS": raw}).relay.tls is mode


def test_an_unknown_relay_tls_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_SMARTHOST_TLS"):
        WorkerConfig.from_env({**RELAY, "POSTWIRE_SMARTHOST_TLS": "maybe"})


def test_credentials_without_tls_are_refused() -> None:
    env = {
        **RELAY,
        "POSTWIRE_SMARTHOST_TLS": "none",
        "POSTWIRE_SMARTHOST_USERNAME": "apikey",
        "POSTWIRE_SMARTHOST_PASSWORD": "s3cret-value",
    }
    with pytest.raises(ConfigError, match="never sent without TLS") as raised:
        WorkerConfig.from_env(env)
    assert "s3cret-value" not in str(raised.value)


def test_a_username_needs_a_password() -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_SMARTHOST_PASSWORD"):
        WorkerConfig.from_env({**RELAY, "POSTWIRE_SMARTHOST_USERNAME": "apikey"})


def test_the_password_stays_out_of_the_config_repr() -> None:
    env = {**RELAY, "POSTWIRE_SMARTHOST_USERNAME": "apikey", "POSTWIRE_SMARTHOST_PASSWORD": "s3cret-value"}
    config = WorkerConfig.from_env(env)
    assert config.relay.password == "s3cret-value"
    assert "s3cret-value" not in repr(config)


def test_the_old_single_timeout_is_refused_with_a_pointer() -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_SMTP_CONNECT_TIMEOUT_SECONDS"):
        WorkerConfig.from_env({**RELAY, "POSTWIRE_SMTP_TIMEOUT_SECONDS": "30"})


def test_timeouts_default_to_postfix_and_are_read_per_phase() -> None:
    assert Timeouts.from_env({}) == Timeouts(
        connect=30, greeting=300, ehlo=300, starttls=300, mail=300, rcpt=300,
        data_init=120, data_xfer=180, data_done=600, rset=20, quit=300,
    )  # fmt: skip
    read = Timeouts.from_env(
        {"POSTWIRE_SMTP_DATA_DONE_TIMEOUT_SECONDS": "900", "POSTWIRE_SMTP_CONNECT_TIMEOUT_SECONDS": "5"}
    )
    assert (read.data_done, read.connect, read.rcpt) == (900, 5, 300)
    assert Timeouts.from_env(Timeouts.env_all(7)) == Timeouts(*([7.0] * 11))


def test_a_bad_timeout_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_SMTP_RCPT_TIMEOUT_SECONDS"):
        Timeouts.from_env({"POSTWIRE_SMTP_RCPT_TIMEOUT_SECONDS": "soon"})


def test_tls_required_domains_are_normalised() -> None:
    config = WorkerConfig.from_env(
        {**RELAY, "POSTWIRE_TLS_REQUIRED_DOMAINS": " Bank.Example. ,mail.gov.example"}
    )
    assert config.tls_required_domains == frozenset({"bank.example", "mail.gov.example"})
