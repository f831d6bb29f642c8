"""The secret that seals DKIM keys, read the same way by policy and mta_worker; pure."""

from __future__ import annotations

from libs.dev_switch import DEV_SECRET_KEY
from libs.domain_keys import Sealer, secret_key
from services.policy.config import PolicyConfig


def test_secret_key_reads_the_variable_and_falls_back_to_the_dev_default() -> None:
    assert secret_key({"POSTWIRE_SECRET_KEY": " s3cret "}) == "s3cret"
    assert secret_key({}) == DEV_SECRET_KEY
    assert secret_key({"POSTWIRE_SECRET_KEY": "  "}) == DEV_SECRET_KEY


def test_policy_seals_with_the_key_secret_key_reads() -> None:
    env = {"POSTWIRE_SECRET_KEY": "s3cret"}
    sealed = Sealer(PolicyConfig.from_env(env).secret_key).seal(b"pem", "d1")
    assert Sealer(secret_key(env)).open(sealed, "d1") == b"pem"
