"""Time bounds and calendar buckets through the HTTP query doors: dates, ``now-1h``, ``tz``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import Tenant
from tests.support import Api, assert_problem
from tests.telemetry.test_http import device_with_token, history, post

V1 = "/api/v1"

# Paris changes to summer time on 2026-03-29 at 01:00 UTC (02:00 CET → 03:00 CEST).
POINTS = [
    ("2026-03-28T21:30:00Z", 1.0),  # 22:30 CET, March 28 in Paris
    ("2026-03-28T23:10:00Z", 2.0),  # 00:10 CET, March 29
    ("2026-03-29T00:50:00Z", 3.0),  # 01:50 CET
    ("2026-03-29T01:20:00Z", 4.0),  # 03:20 CEST
    ("2026-03-29T21:59:00Z", 5.0),  # 23:59 CEST, still March 29 in Paris
    ("2026-03-29T22:01:00Z", 6.0),  # 00:01 CEST, March 30 in Paris; March 29 in UTC
]


def buckets(api: Api, device_id: str, **params: Any) -> list[tuple[str, int, float]]:
    resp = api.get(
        f"{V1}/devices/{device_id}/telemetry",
        params={"sensor": "t", "agg": "count,sum", **params},
    )
    assert resp.status_code == 200, resp.text
    return [(b["ts"], b["count"], b["sum"]) for b in resp.json()["items"]]


@pytest.fixture
def series(tenant: Tenant) -> str:
    device_id, device = device_with_token(tenant)
    resp = post(device, [{"sensor_id": "t", "timestamp": ts, "value": v} for ts, v in POINTS])
    assert resp.status_code == 200, resp.text
    return device_id


def test_hour_buckets_start_on_whole_hours_not_at_from(tenant: Tenant, series: str) -> None:
    got = buckets(
        tenant.viewer, series, interval="1h", **{"from": "2026-03-28T21:17:00Z", "to": "now"}
    )
    assert got[:4] == [
        ("2026-03-28T21:00:00.000000Z", 1, 1.0),
        ("2026-03-28T23:00:00.000000Z", 1, 2.0),
        ("2026-03-29T00:00:00.000000Z", 1, 3.0),
        ("2026-03-29T01:00:00.000000Z", 1, 4.0),
    ]
    # Quarter hours sit on :00, :15, :30, :45 whatever minute from names.
    got = buckets(
        tenant.viewer,
        series,
        interval="15m",
        **{"from": "2026-03-28T21:17:00Z", "to": "2026-03-29T01:00:00Z"},
    )
    assert got == [
        ("2026-03-28T21:30:00.000000Z", 1, 1.0),
        ("2026-03-28T23:00:00.000000Z", 1, 2.0),
        ("2026-03-29T00:45:00.000000Z", 1, 3.0),
    ]


def test_day_buckets_are_utc_days_or_days_of_the_zone_across_a_dst_change(
    tenant: Tenant, series: str
) -> None:
    utc = buckets(
        tenant.viewer, series, interval="1d", **{"from": "2026-03-28", "to": "2026-03-31"}
    )
    assert utc == [
        ("2026-03-28T00:00:00.000000Z", 2, 3.0),
        ("2026-03-29T00:00:00.000000Z", 4, 18.0),
    ]
    # In Paris: the dates are Paris midnights, and March 29 is 23 hours long.
    paris = buckets(
        tenant.viewer,
        series,
        interval="1d",
        tz="Europe/Paris",
        **{"from": "2026-03-28", "to": "2026-03-31"},
    )
    assert paris == [
        ("2026-03-27T23:00:00.000000Z", 1, 1.0),
        ("2026-03-28T23:00:00.000000Z", 4, 14.0),
        ("2026-03-29T22:00:00.000000Z", 1, 6.0),
    ]
    # A week starts on Monday (March 23, 2026) at local midnight.
    week = buckets(
        tenant.viewer,
        series,
        interval="1w",
        tz="Europe/Paris",
        **{"from": "2026-03-26", "to": "2026-04-02"},
    )
    assert week == [
        ("2026-03-22T23:00:00.000000Z", 5, 15.0),
        ("2026-03-29T22:00:00.000000Z", 1, 6.0),
    ]


def test_hours_in_a_zone_follow_its_wall_clock(tenant: Tenant, series: str) -> None:
    got = buckets(
        tenant.viewer,
        series,
        interval="1h",
        tz="Europe/Paris",
        **{"from": "2026-03-29T00:00", "to": "2026-03-29T05:00"},  # Paris wall clock
    )
    # 00:10 CET, 01:50 CET, 03:20 CEST: the skipped hour 02:00 has no bucket.
    assert got == [
        ("2026-03-28T23:00:00.000000Z", 1, 2.0),
        ("2026-03-29T00:00:00.000000Z", 1, 3.0),
        ("2026-03-29T01:00:00.000000Z", 1, 4.0),
    ]
    # India is UTC+05:30: its whole hours are half past in UTC.
    got = buckets(
        tenant.viewer,
        series,
        interval="1h",
        tz="Asia/Kolkata",
        **{"from": "2026-03-28T23:00Z", "to": "2026-03-29T02:00Z"},
    )
    # 23:10 UTC is 04:40 IST; 00:50 and 01:20 UTC are 06:20 and 06:50 IST.
    assert got == [
        ("2026-03-28T22:30:00.000000Z", 1, 2.0),
        ("2026-03-29T00:30:00.000000Z", 2, 7.0),
    ]


def test_dates_and_relative_times_bound_raw_points_and_events(tenant: Tenant) -> None:
    device_id, device = device_with_token(tenant)
    recent = time.time() - 1800  # half an hour ago
    body = [
        {"sensor_id": "t", "timestamp": "2018-05-19T08:00:00Z", "value": 1},
        {"sensor_id": "t", "timestamp": recent, "value": 2},
    ]
    assert post(device, body).status_code == 200
    assert (
        post(device, {"event": "door", "ts": "2018-05-19T09:00:00Z"}, "events").status_code == 200
    )

    def values(**bounds: str) -> list[int]:
        return [p["value"] for p in history(tenant.viewer, device_id, "t", **bounds)]

    assert values(**{"from": "2018-05-19"}) == [1, 2]
    assert values(**{"from": "2018-05-19", "to": "2018-05-20"}) == [1]
    assert values(**{"from": "now-1h"}) == [2]
    assert values(**{"from": "-24h", "to": "now"}) == [2]
    assert values(**{"from": "now-15m"}) == []
    assert values(**{"from": "-7d", "to": "now-1h"}) == []
    # 2018-05-19 in Tokyo began at 15:00 UTC the day before; 08:00 UTC is in it.
    assert values(**{"from": "2018-05-19", "to": "2018-05-20", "tz": "Asia/Tokyo"}) == [1]
    # Offset-less times too: 17:00 in Tokyo is 08:00 UTC (from is inclusive), 17:01 is after.
    assert values(**{"from": "2018-05-19T17:00", "to": "2018-05-20", "tz": "Asia/Tokyo"}) == [1]
    assert values(**{"from": "2018-05-19T17:01", "to": "2018-05-20", "tz": "Asia/Tokyo"}) == []
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert values(**{"from": "-2d", "to": today + "T23:59:59Z"}) == [2]

    resp = tenant.viewer.get(
        f"{V1}/devices/{device_id}/events", params={"from": "2018-05-19", "to": "2018-05-20"}
    )
    assert resp.status_code == 200, resp.text
    assert [e["event"] for e in resp.json()["items"]] == ["door"]
    resp = tenant.viewer.get(f"{V1}/devices/{device_id}/events", params={"from": "now-1h"})
    assert resp.json()["items"] == []
    # The state history reads the same forms.
    resp = tenant.viewer.get(
        f"{V1}/devices/{device_id}/state/history", params={"from": "-7d", "to": "now"}
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "now-1y"}, "to"),
        ({"from": "2018-02-30"}, "from"),
        ({"from": "2300-01-01"}, "from"),
        ({"from": "2018-05-19", "tz": "Mars/Olympus"}, "tz"),
        ({"from": "2018-05-19", "tz": "../../etc/passwd"}, "tz"),
    ],
)
def test_bad_bounds_and_zones_are_422_naming_the_parameter(
    tenant: Tenant, params: dict[str, str], field: str
) -> None:
    device_id, device = device_with_token(tenant)
    assert post(device, {"t": 1}).status_code == 200
    for path, extra in (
        ("telemetry", {"sensor": "t"}),
        ("telemetry", {"sensor": "t", "agg": "avg", "interval": "1h"}),
        ("events", {}),
    ):
        resp = tenant.viewer.get(f"{V1}/devices/{device_id}/{path}", params={**extra, **params})
        body = assert_problem(resp, 422, field)
        assert body["errors"][0]["field"] == field and body["errors"][0]["in"] == "query"
    if field != "tz":
        assert "now-1h" in body["detail"] or "out of range" in body["detail"]


def test_the_openapi_document_describes_the_time_bounds(tenant: Tenant) -> None:
    doc = tenant.viewer.get("/openapi.json").json()
    for path in ("/api/v1/devices/{device_id}/telemetry", "/api/v1/devices/{device_id}/events"):
        params = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}
        for name in ("from", "to"):
            schema = params[name]["schema"]
            text = params[name].get("description", "") + str(schema)
            assert "now-1h" in text and "RFC 3339" in text
            assert "pattern" in str(schema)
        assert "IANA" in params["tz"].get("description", "") + str(params["tz"]["schema"])


@pytest.mark.parametrize(
    "params",
    [
        {"from": "1677-09-22", "to": "1677-10-30", "interval": "1w"},
        {"from": "1677-09-22", "to": "1677-10-30", "interval": "1d", "tz": "Europe/Paris"},
        {"from": "1677-09-22", "to": "1677-09-25", "interval": "7m"},
        {"from": "2262-01-01", "to": "2262-04-11", "interval": "1w", "tz": "Pacific/Kiritimati"},
        {"from": "2262-04-01", "to": "2262-04-11T23:00Z", "interval": "1h", "tz": "Asia/Kolkata"},
    ],
)
def test_buckets_at_the_edges_of_time_answer_empty(
    tenant: Tenant, series: str, params: dict[str, str]
) -> None:
    assert buckets(tenant.viewer, series, **params) == []


def test_too_many_buckets_are_refused(tenant: Tenant, series: str) -> None:
    resp = tenant.viewer.get(
        f"{V1}/devices/{series}/telemetry",
        params={"sensor": "t", "agg": "count", "interval": "1s", "from": "-1d", "tz": "UTC"},
    )
    assert_problem(resp, 422, "more than 10000 buckets")
