"""Fixtures: real emulators on 127.0.0.1 and a signed aiohttp client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from fanout.emulator import Emulator, EmulatorConfig

from .helpers import Api

MakeApi = Callable[..., Awaitable[tuple[Emulator, Api]]]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One client session per test (no proxies: trust_env is off)."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
async def make_api(session: aiohttp.ClientSession) -> AsyncIterator[MakeApi]:
    """Start an emulator with config overrides; get it and a signed client for it."""
    started: list[Emulator] = []

    async def make(**overrides: Any) -> tuple[Emulator, Api]:
        emulator = Emulator(EmulatorConfig(**overrides))
        await emulator.start()
        started.append(emulator)
        return emulator, Api(session, emulator.url)

    yield make
    for emulator in started:
        await emulator.close()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    """A client for a default emulator (100 instances in cn-hangzhou, all usable)."""
    _, client = await make_api()
    return client


@pytest.fixture
async def emu_api(make_api: MakeApi) -> tuple[Emulator, Api]:
    """A default emulator and its client."""
    return await make_api()
