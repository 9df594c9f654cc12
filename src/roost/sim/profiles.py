"""What a simulated retail display sends: plausible telemetry and shopper interaction events.

A display has an enclosure temperature that follows the store's day, a CPU load, a counter of
product pickups and an IR presence sensor; shoppers pick products up (an event with the product,
how long it was held, and whether it led to a sale). Values come from a seeded random generator
so that a run can be repeated.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

PRODUCTS = (162, 171, 188, 203, 215, 224, 239, 247)
# Share of pickups that end in a sale (retail analytics' conversion rate for touched products).
SALE_RATE = 0.18


@dataclass(slots=True)
class DisplayProfile:
    """One simulated display's state between messages."""

    seed: int
    rng: random.Random = field(init=False)
    pickups: int = 0
    base_temperature: float = 0.0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.base_temperature = 24.0 + self.rng.uniform(-2.0, 2.0)

    def telemetry(self, now: float, points: int = 1) -> list[dict[str, Any]] | dict[str, Any]:
        """One message: the sensor form for a single point, else a key/value batch."""
        rng = self.rng
        hour = (now / 3600.0) % 24
        temperature = self.base_temperature + 3.0 * math.sin((hour - 9) / 24 * 2 * math.pi)
        if points == 1:
            return {
                "sensor_id": "temperature",
                "timestamp": int(now * 1000),
                "value": round(temperature + rng.gauss(0, 0.2), 2),
            }
        if rng.random() < 0.3:
            self.pickups += 1
        values = {
            "temperature": round(temperature + rng.gauss(0, 0.2), 2),
            "cpu_load": round(min(100.0, max(0.0, rng.gauss(35, 12))), 1),
            "pickups": self.pickups,
            "presence": rng.random() < 0.4,
        }
        step_ms = 1000 // max(1, points // len(values))
        base_ms = int(now * 1000)
        items: list[dict[str, Any]] = []
        n = 0
        while len(items) * len(values) < points:
            ts = base_ms - (points // len(values) - n) * step_ms
            items.append({"ts": ts, "values": dict(values)})
            values["temperature"] = round(values["temperature"] + rng.gauss(0, 0.05), 2)
            n += 1
        return items

    def event(self, now: float) -> dict[str, Any]:
        """A shopper interaction: a product picked up, held, maybe bought."""
        rng = self.rng
        held = round(rng.lognormvariate(1.6, 0.7), 1)
        self.pickups += 1
        return {
            "event": "product_pickup",
            "product_id": rng.choice(PRODUCTS),
            "duration_s": held,
            "sale": rng.random() < SALE_RATE,
            "ts": int(now * 1000),
        }


def now() -> float:
    """The wall clock in seconds (one place, so a run can be replayed with a fixed clock)."""
    return time.time()
