"""The bus port's shared policy: redelivery back-off and backend selection by URL."""

from __future__ import annotations

import pytest

from roost.bus.base import REDELIVERY_DELAY_MAX_S, REDELIVERY_DELAY_S, open_bus, redelivery_delay
from roost.bus.memory import MemoryBus
from roost.bus.nats import NatsBus
from roost.errors import ConfigError


def test_redelivery_delay_backs_off_to_a_ceiling() -> None:
    delays = [redelivery_delay(n) for n in range(1, 30)]
    assert delays[0] == REDELIVERY_DELAY_S
    assert delays == sorted(delays)
    assert delays[-1] == REDELIVERY_DELAY_MAX_S


def test_open_bus_picks_the_backend_by_scheme() -> None:
    assert isinstance(open_bus("memory://"), MemoryBus)
    assert isinstance(open_bus("nats://127.0.0.1:4222"), NatsBus)
    with pytest.raises(ConfigError):
        open_bus("kafka://localhost:9092")
