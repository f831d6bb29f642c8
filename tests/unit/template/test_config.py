"""Render pool settings: defaults, and a typed error naming the variable for bad values."""

from __future__ import annotations

import pytest

from libs.config import ConfigError
from services.template.config import TemplateConfig


def test_render_pool_defaults() -> None:
    config = TemplateConfig.from_env({})
    assert (config.render_workers, config.render_memory_mb, config.render_time_limit_seconds) == (2, 512, 2.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTWIRE_RENDER_WORKERS", "0"),
        ("POSTWIRE_RENDER_MEMORY_MB", "64"),
        ("POSTWIRE_RENDER_WORKERS", "two"),
    ],
)
def test_bad_render_pool_settings_fail_fast_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        TemplateConfig.from_env({name: value})
