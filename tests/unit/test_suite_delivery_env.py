"""The suites the tests, the bench and `postwire up` start always name their delivery mode: the
services' default becomes MX, which must never send the test suite's or a developer's mail to real
MX hosts, and the capture inbox (no STARTTLS) must be reached without TLS."""

from __future__ import annotations

from pathlib import Path

from libs.embedded.suite import Suite, SuitePorts
from services.cli import _up_delivery


def _env(suite: Suite) -> dict[str, str]:
    suite.nats_url = "nats://127.0.0.1:4222"
    suite.database_url = "postgresql://127.0.0.1:5432/postwire"
    return suite.service_env("mta_worker")


def test_a_relay_suite_names_the_smarthost_mode_and_its_tls() -> None:
    env = _env(Suite(Path("/tmp"), SuitePorts.defaults(), smarthost="127.0.0.1:1025", smarthost_tls="none"))
    assert env["POSTWIRE_DELIVERY_MODE"] == "smarthost"
    assert env["POSTWIRE_SMARTHOST"] == "127.0.0.1:1025"
    assert env["POSTWIRE_SMARTHOST_TLS"] == "none"


def test_an_mx_suite_names_the_mx_mode_and_sets_no_smarthost() -> None:
    env = _env(Suite(Path("/tmp"), SuitePorts.defaults(), smarthost=None))
    assert env["POSTWIRE_DELIVERY_MODE"] == "mx"
    assert "POSTWIRE_SMARTHOST" not in env
    assert "POSTWIRE_SMARTHOST_TLS" not in env


def test_postwire_up_delivers_to_the_capture_inbox_without_tls_by_default() -> None:
    assert _up_delivery({}, inbox="127.0.0.1:1025") == ("127.0.0.1:1025", "none")


def test_postwire_up_keeps_the_tls_default_for_a_relay_named_in_the_shell() -> None:
    env = {"POSTWIRE_SMARTHOST": "smtp.example.net:587"}
    assert _up_delivery(env, inbox="127.0.0.1:1025") == ("smtp.example.net:587", None)


def test_postwire_up_in_mx_mode_sets_no_smarthost() -> None:
    assert _up_delivery({"POSTWIRE_DELIVERY_MODE": "mx"}, inbox="127.0.0.1:1025") == (None, None)


def test_a_setting_for_one_service_reaches_that_service_only() -> None:
    suite = Suite(
        Path("/tmp"),
        SuitePorts.defaults(),
        smarthost=None,
        extra_env={"POSTWIRE_REALTIME_PRIORITY": "0", "POSTWIRE_LOG_LEVEL": "INFO"},
        service_overrides={"edge": {"POSTWIRE_REALTIME_PRIORITY": "10"}},
    )
    suite.nats_url = "nats://127.0.0.1:4222"
    suite.database_url = "postgresql://127.0.0.1:5432/postwire"
    assert suite.service_env("edge")["POSTWIRE_REALTIME_PRIORITY"] == "10"
    assert suite.service_env("submission")["POSTWIRE_REALTIME_PRIORITY"] == "0"
    assert suite.service_env("edge")["POSTWIRE_LOG_LEVEL"] == "INFO"
