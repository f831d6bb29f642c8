"""Where a recipient's mail goes: straight to its domain's MX, or through the relay; and the
settings that cannot be combined fail at start, naming both variables."""

from __future__ import annotations

import pytest

from libs.config import ConfigError
from services.mta_worker.routes import DeliveryMode, MxRoute, RelayRoute, RoutingRules, route


def test_unset_mode_is_mx_and_routes_to_the_recipient_domain() -> None:
    rules = RoutingRules.from_env({})
    assert rules == RoutingRules(mode=DeliveryMode.MX, smarthost=None)
    assert route(rules, "t1", "transactional", "Example.ORG") == MxRoute(domain="example.org")


def test_explicit_mx_mode() -> None:
    rules = RoutingRules.from_env({"POSTWIRE_DELIVERY_MODE": " MX "})
    assert route(rules, "t1", "transactional", "example.org.") == MxRoute(domain="example.org")


def test_smarthost_mode_routes_every_domain_to_the_relay() -> None:
    rules = RoutingRules.from_env(
        {"POSTWIRE_DELIVERY_MODE": "smarthost", "POSTWIRE_SMARTHOST": "smtp.relay.example:587"}
    )
    assert rules == RoutingRules(mode=DeliveryMode.SMARTHOST, smarthost=("smtp.relay.example", 587))
    for domain in ("gmail.com", "example.org"):
        assert route(rules, "t1", "transactional", domain) == RelayRoute(host="smtp.relay.example", port=587)


def test_a_smarthost_while_in_mx_mode_is_an_error_naming_both_settings() -> None:
    for env in (
        {"POSTWIRE_SMARTHOST": "127.0.0.1:1025"},
        {"POSTWIRE_DELIVERY_MODE": "mx", "POSTWIRE_SMARTHOST": "127.0.0.1:1025"},
    ):
        with pytest.raises(ConfigError) as caught:
            RoutingRules.from_env(env)
        assert "POSTWIRE_SMARTHOST" in str(caught.value)
        assert "POSTWIRE_DELIVERY_MODE" in str(caught.value)


@pytest.mark.parametrize("smarthost", [None, "", "  "])
def test_smarthost_mode_without_a_smarthost_is_an_error_naming_both_settings(smarthost: str | None) -> None:
    env = {"POSTWIRE_DELIVERY_MODE": "smarthost"}
    if smarthost is not None:
        env["POSTWIRE_SMARTHOST"] = smarthost
    with pytest.raises(ConfigError) as caught:
        RoutingRules.from_env(env)
    assert "POSTWIRE_SMARTHOST" in str(caught.value)
    assert "POSTWIRE_DELIVERY_MODE" in str(caught.value)


@pytest.mark.parametrize("mode", ["relay", "direct", "smtp", "mx,smarthost"])
def test_an_unknown_mode_is_an_error(mode: str) -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_DELIVERY_MODE"):
        RoutingRules.from_env({"POSTWIRE_DELIVERY_MODE": mode, "POSTWIRE_SMARTHOST": "relay.example:25"})


@pytest.mark.parametrize("smarthost", ["relay.example", "relay.example:0", "relay.example:smtp", ":25"])
def test_a_malformed_smarthost_is_an_error(smarthost: str) -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_SMARTHOST"):
        RoutingRules.from_env({"POSTWIRE_DELIVERY_MODE": "smarthost", "POSTWIRE_SMARTHOST": smarthost})
