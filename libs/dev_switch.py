"""The one dev switch: outside POSTWIRE_ENV=dev, no default secret and no dev-only setting.

Local runs and tests want to start with nothing configured; a cluster must never run on a
secret that is printed in this repository, nor with a setting that skips a check. So every
service refuses to start when a secret it uses is empty or a documented default, or when any
dev-only setting is set, unless POSTWIRE_ENV=dev (which `postwire up` and the tests set and
the Kubernetes manifests never do). Pure: it reads the mapping it is given.
"""

from __future__ import annotations

from collections.abc import Mapping

from libs.token_keys import DEV_TOKEN_KEYS

__all__ = [
    "DEV_ONLY_SETTINGS",
    "DEV_PEPPER",
    "DEV_SECRET_KEY",
    "DEV_TOKEN_KEYS",
    "SECRETS_BY_SERVICE",
    "SECRET_DEFAULTS",
    "is_dev",
    "refusal",
    "unsafe_settings",
]

DEV_PEPPER = "postwire-dev-pepper-change-me"
DEV_SECRET_KEY = "postwire-dev-secret-key-change-me"

# Each secret and the values that count as unset besides the empty string: its documented dev
# default, which anyone can read here.
SECRET_DEFAULTS: Mapping[str, frozenset[str]] = {
    "POSTWIRE_API_KEY_PEPPER": frozenset({DEV_PEPPER}),
    "POSTWIRE_SECRET_KEY": frozenset({DEV_SECRET_KEY}),
    "POSTWIRE_INTERNAL_TOKEN": frozenset(),
    "POSTWIRE_TOKEN_KEYS": frozenset({DEV_TOKEN_KEYS}),
}

# Which secrets each service reads, and so must be given (least privilege: template runs
# tenant-written Jinja and gets nothing it does not need). Edge and mta_worker neither serve
# nor call an internal RPC; mta_worker opens the DKIM keys policy sealed, so it shares policy's
# secret key. tests/unit/test_k8s_manifests.py checks this against what each config reads.
SECRETS_BY_SERVICE: Mapping[str, tuple[str, ...]] = {
    "policy": (
        "POSTWIRE_API_KEY_PEPPER",
        "POSTWIRE_SECRET_KEY",
        "POSTWIRE_INTERNAL_TOKEN",
        "POSTWIRE_TOKEN_KEYS",
    ),
    "template": ("POSTWIRE_INTERNAL_TOKEN", "POSTWIRE_TOKEN_KEYS"),
    "submission": ("POSTWIRE_INTERNAL_TOKEN",),
    "router": ("POSTWIRE_INTERNAL_TOKEN",),
    "events": ("POSTWIRE_INTERNAL_TOKEN", "POSTWIRE_TOKEN_KEYS"),
    # Mints return-path tokens (POSTWIRE_TOKEN_KEYS): with the public dev ring anyone could forge
    # a bounce for any message.
    "mta_worker": ("POSTWIRE_SECRET_KEY", "POSTWIRE_TOKEN_KEYS"),
    # Opens return-path tokens: with the public dev ring anyone could forge a bounce.
    "inbound": ("POSTWIRE_TOKEN_KEYS",),
    "edge": (),
}

# Settings that loosen a check for local runs; refused by every service outside dev, whether
# or not it reads them, since setting one in production is always a mistake.
DEV_ONLY_SETTINGS = (
    "POSTWIRE_DEV_FROM_DOMAINS",
    "POSTWIRE_MX_ALLOW_PRIVATE",
    "POSTWIRE_WEBHOOK_ALLOW_PRIVATE",
)


_DEV_KEY_MATERIAL = DEV_TOKEN_KEYS.partition(":")[2]


def _is_default(name: str, value: str) -> bool:
    if not value or value in SECRET_DEFAULTS[name]:
        return True
    # Every key of a ring opens tokens, so the public dev key anywhere in it is as bad as alone.
    return name == "POSTWIRE_TOKEN_KEYS" and any(
        entry.partition(":")[2].strip() == _DEV_KEY_MATERIAL for entry in value.split(",")
    )


def is_dev(env: Mapping[str, str]) -> bool:
    return env.get("POSTWIRE_ENV", "").strip().lower() == "dev"


def unsafe_settings(env: Mapping[str, str], service: str) -> list[str]:
    """The variables that stop `service` from starting outside dev; empty in dev."""
    if is_dev(env):
        return []
    unsafe = [
        name
        for name in SECRETS_BY_SERVICE.get(service, tuple(SECRET_DEFAULTS))
        if _is_default(name, env.get(name, "").strip())
    ]
    unsafe += [name for name in DEV_ONLY_SETTINGS if env.get(name, "").strip()]
    return unsafe


def refusal(env: Mapping[str, str], service: str) -> str | None:
    """One line saying why `service` must not start, or None. Never echoes a value."""
    unsafe = unsafe_settings(env, service)
    if not unsafe:
        return None
    return (
        f"{service}: refusing to start: {', '.join(unsafe)} "
        f"{'is' if len(unsafe) == 1 else 'are'} empty, a documented dev default, or dev-only; "
        "set real secrets and unset dev-only settings, or set POSTWIRE_ENV=dev for local use"
    )
