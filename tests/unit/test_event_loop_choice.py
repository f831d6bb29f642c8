"""POSTWIRE_EVENT_LOOP picks the loop every service runs on (libs.service_main.run_main)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from libs.config import ConfigError
from libs.service_main import loop_factory


def test_uvloop_by_default() -> None:
    loop = loop_factory({})()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_asyncio_on_request() -> None:
    loop = loop_factory({"POSTWIRE_EVENT_LOOP": " AsyncIO "})()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_a_service_may_default_to_asyncio_and_the_setting_still_wins() -> None:
    loop = loop_factory({}, "asyncio")()
    try:
        assert not isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    loop = loop_factory({"POSTWIRE_EVENT_LOOP": "uvloop"}, "asyncio")()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_anything_else_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="POSTWIRE_EVENT_LOOP"):
        loop_factory({"POSTWIRE_EVENT_LOOP": "trio"})
