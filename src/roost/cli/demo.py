"""The demo fleet: a retail customer with interactive displays in three stores.

Loaded by ``roost serve --demo`` into the ``default`` tenant when it has no devices yet, through the
same service functions every door uses, so the demo data is exactly what a user could have made.
"""

from __future__ import annotations

import random
from typing import Any

import sqlalchemy as sa

from roost.core.access import Actor, Role
from roost.identity.tenants import DEFAULT_TENANT
from roost.inventory.tables import devices
from roost.runtime import Roost

DEMO_ACTOR = Actor(tenant_id=DEFAULT_TENANT, name="demo", role=Role.ADMIN, is_superuser=True)

STORES: tuple[dict[str, Any], ...] = (
    {
        "id": "nyc-5th-ave",
        "name": "New York — Fifth Avenue",
        "city": "New York",
        "country": "US",
        "timezone": "America/New_York",
        "address": "611 Fifth Avenue",
        "postal_code": "10022",
        "latitude": 40.7587,
        "longitude": -73.9776,
    },
    {
        "id": "paris-rivoli",
        "name": "Paris — Rivoli",
        "city": "Paris",
        "country": "FR",
        "timezone": "Europe/Paris",
        "address": "75 Rue de Rivoli",
        "postal_code": "75001",
        "latitude": 48.8601,
        "longitude": 2.3437,
    },
    {
        "id": "london-oxford",
        "name": "London — Oxford Street",
        "city": "London",
        "country": "GB",
        "timezone": "Europe/London",
        "address": "400 Oxford Street",
        "postal_code": "W1A 1AB",
        "latitude": 51.5144,
        "longitude": -0.1527,
    },
)
MODELS: tuple[dict[str, Any], ...] = (
    {
        "id": "perch-counter-c2",
        "reference": "C2",
        "commercial_name": "Perch Counter Display C2",
        "family": "counter",
        "heartbeat_interval_s": 60,
        "description": "Counter-top display with a 3D camera over the product tray",
    },
    {
        "id": "perch-wall-w1",
        "reference": "W1",
        "commercial_name": "Perch Wall Display W1",
        "family": "wall",
        "heartbeat_interval_s": 60,
        "description": "Wall-mounted 43-inch touch display with IR shelf sensors",
    },
)
FIRMWARE: tuple[dict[str, Any], ...] = (
    {"id": "fw-2.3.1", "version": "2.3.1", "release_notes": "Stable release for all displays"},
    {
        "id": "fw-2.4.0",
        "version": "2.4.0",
        "release_notes": "Faster pickup detection; new content player",
    },
)
SENSORS: tuple[dict[str, Any], ...] = (
    {
        "id": "temperature",
        "type": "double",
        "unit": "°C",
        "path": "enclosure",
        "name": "Enclosure temperature",
    },
    {"id": "cpu_load", "type": "double", "unit": "%", "path": "system", "name": "CPU load"},
    {"id": "pickups", "type": "long", "unit": "count", "path": "tray", "name": "Product pickups"},
    {"id": "presence", "type": "boolean", "path": "tray/ir", "name": "Shopper in front"},
    {"id": "content_version", "type": "string", "path": "player", "name": "Content bundle"},
)
DISPLAYS_PER_STORE = 8


def _demo_devices() -> list[dict[str, Any]]:
    rng = random.Random(2019)  # the same fleet on every machine
    fleet = []
    for store in STORES:
        city = store["id"].split("-")[0]
        for n in range(1, DISPLAYS_PER_STORE + 1):
            model = MODELS[0] if n <= 5 else MODELS[1]
            fw = FIRMWARE[1] if n % 3 == 0 else FIRMWARE[0]
            device_id = f"{city}-display-{n:02d}"
            mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
            fleet.append(
                {
                    "id": device_id,
                    "name": f"{store['city']} display {n}",
                    "description": f"{model['commercial_name']} in {store['name']}",
                    "model_id": model["id"],
                    "site_id": store["id"],
                    "firmware_id": fw["id"],
                    "customer_id": "maison-aurele",
                    "tags": {
                        "brand": rng.choice(["fragrance", "beauty", "fashion"]),
                        "floor": str(rng.randint(0, 2)),
                        "env": "production",
                    },
                    "group_ids": [f"store-{city}"],
                    "components": [
                        {
                            "id": "pc",
                            "name": "Display PC",
                            "kind": "computer",
                            "serial_number": f"PC-{rng.randrange(10**8):08d}",
                            "mac_address": mac,
                            "manufacturer": "Intel",
                        },
                        {
                            "id": "camera",
                            "parent_id": "pc",
                            "name": "3D camera",
                            "kind": "camera",
                            "serial_number": f"RS-{rng.randrange(10**8):08d}",
                            "manufacturer": "Intel RealSense",
                        },
                    ],
                }
            )
    return fleet


async def load_demo(roost: Roost) -> str:
    """Fill the default tenant with the demo fleet unless it has devices; say what happened."""
    async with roost.db.read() as conn:
        count = (
            await conn.execute(
                sa.select(sa.func.count())
                .select_from(devices)
                .where(devices.c.tenant_id == DEFAULT_TENANT)
            )
        ).scalar_one()
    if count:
        return f"Demo: the default tenant already has {count} devices; nothing loaded."

    inv = roost.inventory
    await inv.create(
        DEMO_ACTOR,
        "customer",
        {
            "id": "maison-aurele",
            "name": "Maison Aurèle",
            "contact_email": "retail-ops@maison-aurele.example",
        },
    )
    await inv.create(
        DEMO_ACTOR,
        "manufacturer",
        {"id": "perch", "name": "Perch Interactive", "website": "https://perch.example"},
    )
    for model in MODELS:
        await inv.create(DEMO_ACTOR, "device_model", {**model, "manufacturer_id": "perch"})
    for fw in FIRMWARE:
        await inv.create(DEMO_ACTOR, "firmware", fw)
    for store in STORES:
        await inv.create(DEMO_ACTOR, "site", {**store, "customer_id": "maison-aurele"})
        city = store["id"].split("-")[0]
        await inv.create(
            DEMO_ACTOR,
            "group",
            {
                "id": f"store-{city}",
                "name": f"{store['city']} store",
                "description": f"Every display in {store['name']}",
            },
        )
    await inv.create(
        DEMO_ACTOR,
        "group",
        {
            "id": "wall-displays",
            "name": "Wall displays",
            "description": "Dynamic: every W1 wall display",
            "filter": {"model_id": "perch-wall-w1"},
        },
    )

    fleet = _demo_devices()
    async with roost.db.write() as conn:
        for spec in fleet:
            parts = spec.pop("components")
            await roost.devices.create_in(conn, DEMO_ACTOR, spec)
            for sensor in SENSORS:
                await roost.devices.create_sensor_in(conn, DEMO_ACTOR, spec["id"], sensor)
            for part in parts:
                await roost.devices.create_component_in(conn, DEMO_ACTOR, spec["id"], part)
    return (
        f"Demo: loaded {len(fleet)} displays with {len(SENSORS)} sensors each in {len(STORES)} "
        f"stores, {len(MODELS)} models, {len(FIRMWARE)} firmware versions, "
        f"{len(STORES) + 1} groups."
    )
