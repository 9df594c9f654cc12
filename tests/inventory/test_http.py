"""Customers, sites, manufacturers, device models, firmware and groups through the HTTP API.

One table (``KINDS``) describes each kind; the same checks run on all of them: create / get /
patch / delete, paging that partitions the collection, every declared filter, ``q`` text search,
sorting, and the refusals (409 on an existing id, 422 on unknown sort fields and parameters).
Values are lower-case ASCII of equal length so that every database collation orders them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from roost.core.ids import is_slug
from tests.conftest import Tenant
from tests.support import Api, assert_problem

API = "/api/v1"
# Texts for ``q``, given in turn to the records (so they repeat): 0 and 1 differ only by a literal
# '%', 2 and 3 by a literal '_', and 4 holds a backslash, the LIKE escape character.
SEARCH_TEXTS = ["big 50% sale", "big 50 percent", "under_score", "underxscore", "back\\slash"]
# (query, id that a wildcard reading of the query would wrongly match)
SEARCHES = [
    ("50%", "r01"),
    ("BIG 50", None),
    ("UNDER_", "r03"),
    ("%", "r01"),
    ("_", "r03"),
    ("K\\S", None),
    ("R05", None),
]


def created(client: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a record and answer it, asserting 201."""
    resp = client.post(path, json=body)
    assert resp.status_code == 201, resp.text
    record: dict[str, Any] = resp.json()
    return record


def ids_of(client: Api, url: str, **params: Any) -> list[str]:
    """The ids a list answers for ``params`` (one large page)."""
    resp = client.get(url, params={"limit": 1000, **params})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["total"] == len(body["items"])
    return [item["id"] for item in body["items"]]


@dataclass(frozen=True)
class Kind:
    """How to exercise one inventory kind."""

    name: str
    path: str
    # Records the kind refers to, created first; answers ids for ``record``.
    setup: Callable[[Api], dict[str, str]]
    # The i-th of several records (ids are given by the caller); ``text`` goes in ``text_field``.
    record: Callable[[int, dict[str, str]], dict[str, Any]]
    text_field: str
    # The fields ``q`` searches (as the service declares them).
    text_fields: tuple[str, ...]
    required: tuple[str, ...]
    # field -> (a new value, what a null PATCH leaves in the field)
    patches: dict[str, tuple[Any, Any]]
    # A sortable field that several records share a value of.
    sort_field: str
    filters: tuple[str, ...] = ()
    # Fields whose stored form differs from what was sent: field -> (sent, stored).
    normalised: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def _no_refs(client: Api) -> dict[str, str]:
    return {}


def _site_refs(client: Api) -> dict[str, str]:
    for cid in ("custa", "custb"):
        created(client, f"{API}/customers", {"id": cid, "name": cid})
    return {"a": "custa", "b": "custb"}


def _model_refs(client: Api) -> dict[str, str]:
    for mid in ("mfra", "mfrb"):
        created(client, f"{API}/manufacturers", {"id": mid, "name": mid})
    return {"a": "mfra", "b": "mfrb"}


def _firmware_refs(client: Api) -> dict[str, str]:
    for mid in ("moda", "modb"):
        created(
            client, f"{API}/device-models", {"id": mid, "reference": mid, "commercial_name": mid}
        )
    return {"a": "moda", "b": "modb"}


def _ab(i: int, refs: dict[str, str]) -> str:
    return refs["a"] if i % 2 == 0 else refs["b"]


KINDS = [
    Kind(
        name="customer",
        path=f"{API}/customers",
        setup=_no_refs,
        record=lambda i, refs: {
            "name": ["alpha", "bravo"][i % 2],
            "contact_email": f"ops{i}@example.com",
            "notes": f"note {i}",
        },
        text_field="notes",
        text_fields=("id", "name", "notes"),
        required=("name",),
        patches={"contact_email": ("new@example.com", None), "notes": ("changed", "")},
        sort_field="name",
    ),
    Kind(
        name="site",
        path=f"{API}/sites",
        setup=_site_refs,
        record=lambda i, refs: {
            "name": ["alpha", "bravo", "charlie"][i % 3],
            "customer_id": _ab(i, refs),
            "address": f"{i} rue de la paix",
            "city": ["paris", "lyon"][i % 2],
            "postal_code": f"7500{i}",
            "country": ["fr", "de", "it"][i % 3],
            "timezone": ["Europe/Paris", "Europe/Berlin"][i % 2],
            "latitude": 48.5 + i,
            "longitude": -2.25 - i,
            "notes": "",
        },
        text_field="name",
        text_fields=("id", "name", "address", "city", "notes"),
        required=("name",),
        patches={
            "city": ("nantes", ""),
            "timezone": ("Asia/Tokyo", "UTC"),
            "latitude": (-33.9, None),
            "longitude": (151.2, None),
            "country": ("jp", None),
            "customer_id": (None, None),
        },
        sort_field="city",
        filters=("customer_id", "city", "country", "timezone"),
        normalised={"country": ("fr", "FR")},
    ),
    Kind(
        name="manufacturer",
        path=f"{API}/manufacturers",
        setup=_no_refs,
        record=lambda i, refs: {
            "name": ["alpha", "bravo"][i % 2],
            "website": f"https://m{i}.example",
        },
        text_field="name",
        text_fields=("id", "name"),
        required=("name",),
        patches={"website": ("https://new.example", None), "notes": ("hello", "")},
        sort_field="name",
    ),
    Kind(
        name="device_model",
        path=f"{API}/device-models",
        setup=_model_refs,
        record=lambda i, refs: {
            "reference": ["ref-a", "ref-b", "ref-c"][i % 3],
            "commercial_name": f"model {i}",
            "manufacturer_id": _ab(i, refs),
            "family": ["kiosk", "sensor"][i % 2],
            "description": "",
            "heartbeat_interval_s": 60 + i,
            "auto_create_sensors": i % 2 == 0,
        },
        text_field="commercial_name",
        text_fields=("id", "reference", "commercial_name", "family", "description"),
        required=("reference", "commercial_name"),
        patches={
            "family": ("gateway", ""),
            "heartbeat_interval_s": (300, None),
            "auto_create_sensors": (False, True),
            "description": ("d", ""),
            "manufacturer_id": (None, None),
        },
        sort_field="family",
        filters=("manufacturer_id", "family", "reference"),
    ),
    Kind(
        name="firmware",
        path=f"{API}/firmware",
        setup=_firmware_refs,
        record=lambda i, refs: {
            "version": ["1.0.0", "1.1.0", "2.0.0"][i % 3],
            "model_id": _ab(i, refs),
            "release_notes": f"notes {i}",
            "released_at": f"2026-01-0{i % 9 + 1}T10:00:00Z",
        },
        text_field="release_notes",
        text_fields=("id", "version", "release_notes"),
        required=("version",),
        patches={
            "release_notes": ("fixed", ""),
            "released_at": ("2026-03-01T00:00:00Z", None),
            "model_id": (None, None),
        },
        sort_field="version",
        filters=("model_id", "version"),
    ),
    Kind(
        name="group",
        path=f"{API}/groups",
        setup=_no_refs,
        record=lambda i, refs: {"name": ["alpha", "bravo"][i % 2], "description": f"group {i}"},
        text_field="description",
        text_fields=("id", "name", "description"),
        required=("name",),
        patches={"description": ("d", ""), "filter": ({"tags": {"env": "prod"}}, None)},
        sort_field="name",
    ),
]

N_RECORDS = 7


def _expected_value(kind: Kind, name: str, value: Any) -> Any:
    if name in kind.normalised and kind.normalised[name][0] == value:
        return kind.normalised[name][1]
    if name == "country" and isinstance(value, str):
        return value.upper()
    return value


def check_crud(client: Api, kind: Kind, refs: dict[str, str], admin: Api) -> None:
    body = {"id": "r-first", **kind.record(0, refs)}
    record = created(client, kind.path, body)
    for name, value in body.items():
        if name.endswith("_at"):
            assert record[name].startswith(value[:19]), (name, record[name])
        else:
            assert record[name] == _expected_value(kind, name, value), (name, record)
    assert record["created_at"] == record["updated_at"]
    assert client.get(f"{kind.path}/r-first").json() == record

    # An id that exists answers 409 and changes nothing.
    dup = client.post(kind.path, json={**kind.record(1, refs), "id": "r-first"})
    assert_problem(dup, 409, "already exists")
    assert client.get(f"{kind.path}/r-first").json() == record

    # No id: one is generated, valid by the id rule, and the record is readable under it.
    generated = created(client, kind.path, kind.record(1, refs))
    assert is_slug(generated["id"]) and generated["id"] != "r-first"
    assert client.get(f"{kind.path}/{generated['id']}").json() == generated

    # Another tenant does not see the record.
    assert_problem(admin.get(f"{kind.path}/r-first"), 404)

    # PATCH is partial: each changed field takes its value, the others stay.
    for name, (value, _cleared) in kind.patches.items():
        resp = client.patch(f"{kind.path}/r-first", json={name: value})
        assert resp.status_code == 200, resp.text
        after = resp.json()
        if name.endswith("_at"):
            assert after[name].startswith(value[:19])
        else:
            assert after[name] == _expected_value(kind, name, value), (name, after)
        for other in kind.required:
            assert after[other] == record[other]
        assert after["created_at"] == record["created_at"]
        assert after["updated_at"] >= record["updated_at"]
        assert client.get(f"{kind.path}/r-first").json() == after

    # null clears an optional field (or resets it to its default) ...
    for name, (_value, cleared) in kind.patches.items():
        resp = client.patch(f"{kind.path}/r-first", json={name: None})
        assert resp.status_code == 200, resp.text
        assert resp.json()[name] == cleared, (name, resp.json())
    # ... but a required field cannot be cleared, and unknown fields are refused.
    for name in kind.required:
        assert_problem(client.patch(f"{kind.path}/r-first", json={name: None}), 422)
    assert_problem(client.patch(f"{kind.path}/r-first", json={"colour": "red"}), 422)
    assert_problem(client.patch(f"{kind.path}/nope", json={kind.required[0]: "x"}), 404)

    # Delete: 204, then 404 for reads, writes and a second delete.
    resp = client.delete(f"{kind.path}/r-first")
    assert resp.status_code == 204 and resp.content == b""
    assert_problem(client.get(f"{kind.path}/r-first"), 404)
    assert_problem(client.patch(f"{kind.path}/r-first", json={kind.required[0]: "x"}), 404)
    assert_problem(client.delete(f"{kind.path}/r-first"), 404)
    assert client.delete(f"{kind.path}/{generated['id']}").status_code == 204
    assert ids_of(client, kind.path) == []


def _sort_key(value: Any) -> tuple[bool, Any]:
    return (value is None, value)


def check_listing(client: Api, kind: Kind, refs: dict[str, str]) -> None:
    records = []
    for i in range(N_RECORDS):
        body = {"id": f"r{i:02d}", **kind.record(i, refs)}
        body[kind.text_field] = SEARCH_TEXTS[i % len(SEARCH_TEXTS)]
        records.append(created(client, kind.path, body))
    all_ids = [r["id"] for r in records]

    # The default order is by id; the envelope reports limit and offset as asked.
    resp = client.get(kind.path)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (N_RECORDS, 50, 0)
    assert [item["id"] for item in body["items"]] == all_ids
    assert body["items"][0] == records[0]

    # Sorting by a shared value, both ways, ties broken by id in the same direction.
    field_name = kind.sort_field
    ascending = [
        r["id"] for r in sorted(records, key=lambda r: (_sort_key(r[field_name]), r["id"]))
    ]
    descending = [
        r["id"]
        for r in sorted(records, key=lambda r: (_sort_key(r[field_name]), r["id"]), reverse=True)
    ]
    assert len({r[field_name] for r in records}) < N_RECORDS, "the sort field must repeat"
    assert ids_of(client, kind.path, sort=field_name) == ascending
    assert ids_of(client, kind.path, sort=f"-{field_name}") == descending
    assert ids_of(client, kind.path, sort="-id") == all_ids[::-1]

    # Pages partition the sorted collection: no duplicates, no gaps; total ignores the limit.
    for sort, expected in ((field_name, ascending), (f"-{field_name}", descending)):
        seen: list[str] = []
        for offset in range(0, N_RECORDS + 3, 3):
            page = client.get(kind.path, params={"sort": sort, "limit": 3, "offset": offset}).json()
            assert (page["total"], page["limit"], page["offset"]) == (N_RECORDS, 3, offset)
            seen += [item["id"] for item in page["items"]]
        assert seen == expected
    past_end = client.get(kind.path, params={"offset": 100}).json()
    assert past_end["items"] == [] and past_end["total"] == N_RECORDS

    # Every declared filter selects exactly the records holding the value.
    for name in kind.filters:
        for value in {r[name] for r in records if r[name] is not None}:
            expected = [r["id"] for r in records if r[name] == value]
            assert 0 < len(expected) < N_RECORDS, (name, value)
            assert ids_of(client, kind.path, **{name: value}) == expected, (name, value)
        assert ids_of(client, kind.path, **{name: "no-such-value"}) == []
    if len(kind.filters) >= 2:
        a, b = kind.filters[:2]
        va, vb = records[0][a], records[0][b]
        expected = [r["id"] for r in records if r[a] == va and r[b] == vb]
        assert ids_of(client, kind.path, **{a: va, b: vb}) == expected

    # q: case-insensitive substring of any text field (ids included), %, _ and \ taken literally.
    for q, wildcard_match in SEARCHES:
        expected = [
            r["id"]
            for r in records
            if any(q.lower() in str(r[f]).lower() for f in kind.text_fields)
        ]
        assert expected and wildcard_match not in expected, (q, expected)
        assert ids_of(client, kind.path, q=q) == expected, q
    page = client.get(kind.path, params={"q": "big", "limit": 1, "offset": 1}).json()
    assert page["total"] == 4 and len(page["items"]) == 1

    # Refusals: unknown sort field, unknown parameter, bad paging.
    assert_problem(client.get(kind.path, params={"sort": "colour"}), 422, "sort")
    assert_problem(client.get(kind.path, params={"sort": "-tenant_id"}), 422, "sort")
    assert_problem(client.get(kind.path, params={"colour": "red"}), 422, "colour")
    assert_problem(client.get(kind.path, params={"limit": 0}), 422, "limit")
    assert_problem(client.get(kind.path, params={"offset": -1}), 422, "offset")


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_crud_paging_filters_search_and_sort(tenant: Tenant, admin: Api, kind: Kind) -> None:
    refs = kind.setup(tenant.operator)
    check_crud(tenant.operator, kind, refs, admin)
    check_listing(tenant.operator, kind, refs)
    # A viewer reads but does not write.
    assert tenant.viewer.get(f"{kind.path}/r00").status_code == 200
    assert_problem(tenant.viewer.post(kind.path, json=kind.record(0, refs)), 403)
    assert_problem(tenant.viewer.patch(f"{kind.path}/r00", json={kind.required[0]: "x"}), 403)
    assert_problem(tenant.viewer.delete(f"{kind.path}/r00"), 403)


def test_references_must_exist_and_block_deletion_while_used(tenant: Tenant, admin: Api) -> None:
    check_unknown_references(tenant.operator)
    check_deleting_referenced_records(tenant.operator, admin)


def check_unknown_references(op: Api) -> None:
    """An unknown reference is 422 naming the field, on create and on PATCH."""
    cases = [
        (f"{API}/sites", {"name": "s", "customer_id": "ghost"}, "customer_id"),
        (
            f"{API}/device-models",
            {"reference": "r", "commercial_name": "c", "manufacturer_id": "ghost"},
            "manufacturer_id",
        ),
        (f"{API}/firmware", {"version": "1", "model_id": "ghost"}, "model_id"),
        (f"{API}/devices", {"site_id": "ghost"}, "site_id"),
        (f"{API}/devices", {"model_id": "ghost"}, "model_id"),
        (f"{API}/devices", {"firmware_id": "ghost"}, "firmware_id"),
        (f"{API}/devices", {"customer_id": "ghost"}, "customer_id"),
    ]
    for path, body, field_name in cases:
        problem = assert_problem(op.post(path, json=body), 422, "ghost")
        assert [e["field"] for e in problem["errors"]] == [field_name], problem
        assert ids_of(op, path) == []
    # Two bad references at once are both named.
    problem = assert_problem(
        op.post(f"{API}/devices", json={"site_id": "s1", "model_id": "m1"}), 422
    )
    assert sorted(e["field"] for e in problem["errors"]) == ["model_id", "site_id"]

    # The same holds for PATCH, which leaves the record unchanged.
    created(op, f"{API}/sites", {"id": "s", "name": "s"})
    created(op, f"{API}/devices", {"id": "d"})
    for path, field_name in (
        (f"{API}/sites/s", "customer_id"),
        (f"{API}/devices/d", "site_id"),
        (f"{API}/devices/d", "model_id"),
    ):
        problem = assert_problem(op.patch(path, json={field_name: "ghost"}), 422, "ghost")
        assert [e["field"] for e in problem["errors"]] == [field_name]
        assert op.get(path).json()[field_name] is None
    assert op.delete(f"{API}/devices/d").status_code == 204
    assert op.delete(f"{API}/sites/s").status_code == 204


def check_deleting_referenced_records(op: Api, admin: Api) -> None:
    """Deleting a record still referenced is 409 saying what uses it; once released it goes."""
    created(op, f"{API}/customers", {"id": "acme", "name": "Acme"})
    created(op, f"{API}/sites", {"id": "paris", "name": "Paris", "customer_id": "acme"})
    created(op, f"{API}/manufacturers", {"id": "bosch", "name": "Bosch"})
    created(
        op,
        f"{API}/device-models",
        {"id": "k1", "reference": "K1", "commercial_name": "Kiosk", "manufacturer_id": "bosch"},
    )
    created(op, f"{API}/firmware", {"id": "fw1", "version": "1.0", "model_id": "k1"})
    created(
        op,
        f"{API}/devices",
        {
            "id": "d1",
            "site_id": "paris",
            "model_id": "k1",
            "firmware_id": "fw1",
            "customer_id": "acme",
        },
    )
    created(op, f"{API}/devices", {"id": "d2", "site_id": "paris"})

    # Each refusal says what still uses the record.
    assert (
        "2 devices" in assert_problem(op.delete(f"{API}/sites/paris"), 409, "still used")["detail"]
    )
    detail = assert_problem(op.delete(f"{API}/customers/acme"), 409, "still used")["detail"]
    assert "1 sites" in detail and "1 devices" in detail
    assert_problem(op.delete(f"{API}/manufacturers/bosch"), 409, "device models")
    detail = assert_problem(op.delete(f"{API}/device-models/k1"), 409, "still used")["detail"]
    assert "devices" in detail and "firmware" in detail
    assert_problem(op.delete(f"{API}/firmware/fw1"), 409, "devices")
    for path in (
        "sites/paris",
        "customers/acme",
        "manufacturers/bosch",
        "device-models/k1",
        "firmware/fw1",
    ):
        assert op.get(f"{API}/{path}").status_code == 200, path

    # Released one reference at a time, each can go.
    assert op.patch(f"{API}/devices/d1", json={"firmware_id": None}).status_code == 200
    assert op.delete(f"{API}/firmware/fw1").status_code == 204
    assert op.patch(f"{API}/devices/d1", json={"model_id": None}).status_code == 200
    assert op.delete(f"{API}/device-models/k1").status_code == 204
    assert op.delete(f"{API}/manufacturers/bosch").status_code == 204
    assert op.delete(f"{API}/devices/d2").status_code == 204
    assert_problem(op.delete(f"{API}/sites/paris"), 409, "1 devices")
    assert (
        op.patch(f"{API}/devices/d1", json={"site_id": None, "customer_id": None}).status_code
        == 200
    )
    assert op.delete(f"{API}/sites/paris").status_code == 204
    assert op.delete(f"{API}/customers/acme").status_code == 204

    # A site's customer must be of the same tenant: the superuser's default tenant has none.
    created(op, f"{API}/customers", {"id": "acme2", "name": "Acme"})
    problem = assert_problem(
        admin.post(f"{API}/sites", json={"name": "x", "customer_id": "acme2"}), 422
    )
    assert problem["errors"][0]["field"] == "customer_id"


def test_country_filter_matches_however_it_is_written(tenant: Tenant) -> None:
    op = tenant.operator
    created(op, "/api/v1/sites", {"id": "paris", "name": "Paris", "country": "fr"})
    created(op, "/api/v1/sites", {"id": "nyc", "name": "New York", "country": "US"})
    for value in ("FR", "fr", "Fr"):
        resp = op.get("/api/v1/sites", params={"country": value})
        assert [s["id"] for s in resp.json()["items"]] == ["paris"], value


def test_sorting_puts_missing_values_last_in_both_directions(tenant: Tenant) -> None:
    op = tenant.operator
    created(
        op,
        "/api/v1/firmware",
        {"id": "fw-a", "version": "1", "released_at": "2026-01-01T00:00:00Z"},
    )
    created(
        op,
        "/api/v1/firmware",
        {"id": "fw-b", "version": "2", "released_at": "2026-06-01T00:00:00Z"},
    )
    created(op, "/api/v1/firmware", {"id": "fw-c", "version": "3"})
    for sort, expected in (
        ("released_at", ["fw-a", "fw-b", "fw-c"]),
        ("-released_at", ["fw-b", "fw-a", "fw-c"]),
    ):
        resp = op.get("/api/v1/firmware", params={"sort": sort})
        assert [f["id"] for f in resp.json()["items"]] == expected, sort
