"""Security floors from pyproject (RELIABILITY.md finding 8) hold in the installed environment."""

from __future__ import annotations

import importlib.metadata
import re

import pytest

FLOORS = {"aiosmtplib": "5.1.2", "aiosmtpd": "1.4.6", "jinja2": "3.1.6"}


def _tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def at_least(installed: str, floor: str) -> bool:
    try:
        from packaging.version import Version
    except ImportError:  # pragma: no cover - packaging is normally present
        return _tuple(installed) >= _tuple(floor)
    return Version(installed) >= Version(floor)


@pytest.mark.parametrize(("package", "floor"), sorted(FLOORS.items()))
def test_installed_version_meets_security_floor(package: str, floor: str) -> None:
    installed = importlib.metadata.version(package)
    assert at_least(installed, floor), f"{package} {installed} is below the security floor {floor}"


def test_comparison_helpers() -> None:
    assert at_least("3.1.6", "3.1.6")
    assert at_least("3.1.10", "3.1.6")
    assert not at_least("3.1.5", "3.1.6")
    assert _tuple("5.1.2") == (5, 1, 2)
    assert _tuple("1.4.10") > _tuple("1.4.6")
