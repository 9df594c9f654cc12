"""Reference tables through the HTTP API of a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from roost.alarms.reference.parse import MAX_ROWS, MAX_VALUE_CHARS
from roost.alarms.reference.service import KEPT_VERSIONS
from tests.conftest import Tenant
from tests.support import Api, assert_problem, unique

V1 = "/api/v1/reference-tables"
CSV = "text/csv"
PRODUCTS = (
    "product_id,name,brand,category,price,in_stock,barcode,note\n"
    "P-1001,Espresso beans 1 kg,Roastery,coffee,18.5,true,007,\n"
    'P-1002,"Oat milk, 1 l",Oatly,dairy-free,2,false,12345678901234567890123,"say ""hi"""\n'
)


def put_csv(api: Api, name: str, text: str | bytes, **params: str) -> httpx.Response:
    body = text.encode() if isinstance(text, str) else text
    return api.put(f"{V1}/{name}", content=body, headers={"Content-Type": CSV}, params=params)


def rows_of(api: Api, name: str, **params: Any) -> dict[str, Any]:
    resp = api.get(f"{V1}/{name}", params=params)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_a_csv_upload_is_listed_read_by_page_and_by_key(tenant: Tenant) -> None:
    resp = put_csv(tenant.operator, "products", PRODUCTS)
    assert resp.status_code == 200, resp.text
    made = resp.json()
    assert made["name"] == "products" and made["version"] == 1 and made["row_count"] == 2
    assert made["key"] == "product_id"
    assert made["columns"] == [
        "product_id", "name", "brand", "category", "price", "in_stock", "barcode", "note",
    ]  # fmt: skip
    assert made["updated_by"] == tenant.usernames["operator"]

    listed = tenant.viewer.get(V1).json()
    assert listed["total"] == 1 and listed["items"][0]["name"] == "products"

    table = rows_of(tenant.viewer, "products")
    assert table["rows_version"] == 1 and table["rows"]["total"] == 2
    first, second = table["rows"]["items"]
    # The value rule: JSON numbers and booleans are typed, an empty cell is null, text stays.
    assert first == {
        "product_id": "P-1001", "name": "Espresso beans 1 kg", "brand": "Roastery",
        "category": "coffee", "price": 18.5, "in_stock": True, "barcode": "007", "note": None,
    }  # fmt: skip
    assert second["name"] == "Oat milk, 1 l" and second["price"] == 2
    assert second["in_stock"] is False and second["note"] == 'say "hi"'
    assert second["barcode"] == "12345678901234567890123"  # past 64 bits: stays text

    found = rows_of(tenant.viewer, "products", q="OATLY")["rows"]
    assert [r["product_id"] for r in found["items"]] == ["P-1002"] and found["total"] == 1
    assert rows_of(tenant.viewer, "products", q="product_id")["rows"]["total"] == 0
    paged = rows_of(tenant.viewer, "products", limit=1, offset=1)["rows"]
    assert [r["product_id"] for r in paged["items"]] == ["P-1002"] and paged["total"] == 2

    row = tenant.viewer.get(f"{V1}/products/rows/P-1001")
    assert row.status_code == 200, row.text
    assert row.json()["values"]["price"] == 18.5 and row.json()["version"] == 1
    assert_problem(tenant.viewer.get(f"{V1}/products/rows/P-9"), 404, "P-9")


def test_key_column_by_query_and_json_upload_make_new_versions(tenant: Tenant) -> None:
    resp = put_csv(tenant.operator, "stores", "city,store_id\nParis,S1\nLyon,S2\n", key="store_id")
    assert resp.status_code == 200, resp.text
    assert resp.json()["key"] == "store_id"
    assert tenant.viewer.get(f"{V1}/stores/rows/S2").json()["values"] == {
        "city": "Lyon",
        "store_id": "S2",
    }
    body = {"key": "store_id", "rows": [{"store_id": 7, "city": "Nice", "open": True}]}
    resp = tenant.operator.put(f"{V1}/stores", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"] == 2 and resp.json()["columns"] == ["store_id", "city", "open"]
    # The current version is what reads see; the old one stays readable.
    assert tenant.viewer.get(f"{V1}/stores/rows/7").json()["values"]["store_id"] == "7"
    assert_problem(tenant.viewer.get(f"{V1}/stores/rows/S1"), 404)
    old = rows_of(tenant.viewer, "stores", version=1)
    assert old["version"] == 2 and old["rows_version"] == 1
    assert [r["store_id"] for r in old["rows"]["items"]] == ["S1", "S2"]

    versions = tenant.viewer.get(f"{V1}/stores/versions").json()
    assert versions["total"] == 2
    assert [(v["version"], v["current"], v["row_count"]) for v in versions["items"]] == [
        (2, True, 1),
        (1, False, 2),
    ]
    assert {v["created_by"] for v in versions["items"]} == {tenant.usernames["operator"]}


def test_only_the_last_versions_keep_their_rows(tenant: Tenant) -> None:
    uploads = KEPT_VERSIONS + 2
    for n in range(1, uploads + 1):
        assert put_csv(tenant.operator, "t", f"k,v\na,{n}\n").status_code == 200
    versions = tenant.viewer.get(f"{V1}/t/versions").json()["items"]
    kept = {v["version"]: v["rows_kept"] for v in versions}
    assert kept == {n: n > uploads - KEPT_VERSIONS for n in range(1, uploads + 1)}
    oldest_kept = uploads - KEPT_VERSIONS + 1
    assert rows_of(tenant.viewer, "t", version=oldest_kept)["rows"]["items"] == [
        {"k": "a", "v": oldest_kept}
    ]
    assert_problem(
        tenant.viewer.get(f"{V1}/t", params={"version": oldest_kept - 1}), 404, "no longer kept"
    )
    assert_problem(tenant.viewer.get(f"{V1}/t", params={"version": 99}), 404, "no version 99")


BAD_UPLOADS = [
    pytest.param(b"k,v\na,1\nb,2,3\n", 3, "has 3 cells", id="wrong-column-count"),
    pytest.param(b"k,v\na,1\nb,2\na,3\n", 4, "duplicate key 'a' (first on line 2)", id="duplicate"),
    pytest.param(b"k,v\na,1\n  ,2\n", 3, "the key is empty", id="empty-key"),
    pytest.param(b"k,v\na,1\nb,\xff\xfe\n", 3, "not UTF-8", id="bad-utf8"),
    pytest.param(
        f"k,v\na,1\nb,{'x' * (MAX_VALUE_CHARS + 1)}\n".encode(), 3, "longer than", id="long-value"
    ),
    pytest.param(b'k,v\na,1\nb,"unclosed\n', 3, "not valid CSV", id="unclosed-quote"),
    pytest.param(b"k,k\na,1\n", 1, "appears twice", id="header-twice"),
    pytest.param(b"k,v\n", 1, "no rows", id="header-only"),
    pytest.param(
        ("k\n" + "".join(f"r{i}\n" for i in range(MAX_ROWS + 1))).encode(),
        MAX_ROWS + 2,
        f"at most {MAX_ROWS} rows",
        id="too-many-rows",
    ),
]


@pytest.mark.parametrize(("body", "line", "message"), BAD_UPLOADS)
def test_a_bad_row_refuses_the_upload_naming_its_line_and_replaces_nothing(
    tenant: Tenant, body: bytes, line: int, message: str
) -> None:
    assert put_csv(tenant.operator, "t", "k,v\nkeep,1\n").status_code == 200
    problem = assert_problem(put_csv(tenant.operator, "t", body), 422, "nothing was replaced")
    assert problem["errors"], problem
    fault = problem["errors"][0]
    assert fault["line"] == line and message in fault["message"], problem
    after = rows_of(tenant.viewer, "t")
    assert after["version"] == 1 and after["rows"]["items"] == [{"k": "keep", "v": 1}]
    assert tenant.viewer.get(f"{V1}/t/versions").json()["total"] == 1


def test_every_bad_row_is_listed(tenant: Tenant) -> None:
    body = b"k,v\na,1\na,2\nb\n,4\nc,5\n"
    problem = assert_problem(put_csv(tenant.operator, "t", body), 422)
    assert [(e["line"], e["row"]) for e in problem["errors"]] == [(3, 2), (4, 3), (5, 4)]
    assert "3 of 5 row(s) are invalid (first: line 3)" in problem["detail"]
    assert_problem(tenant.viewer.get(f"{V1}/t"), 404)  # nothing made either


@pytest.mark.parametrize(
    ("body", "row", "message"),
    [
        ({"key": "id", "rows": [{"id": "a"}, {"name": "no id"}]}, 2, "missing"),
        (
            {"key": "id", "rows": [{"id": "a"}, {"id": "a"}]},
            2,
            "duplicate key 'a' (first in row 1)",
        ),
        ({"key": "id", "rows": [{"id": "a", "v": {"deep": 1}}]}, 1, "not an object"),
        ({"key": "id", "rows": [{"id": 1.5}]}, 1, "string or an integer"),
        ({"key": "id", "rows": ["a"]}, 1, "must be an object"),
    ],
)
def test_a_bad_json_row_is_named(
    tenant: Tenant, body: dict[str, Any], row: int, message: str
) -> None:
    problem = assert_problem(tenant.operator.put(f"{V1}/t", json=body), 422)
    assert problem["errors"][0]["row"] == row, problem
    assert message in problem["errors"][0]["message"], problem


def test_wrong_content_type_too_large_and_bad_names_are_refused(tenant: Tenant) -> None:
    resp = tenant.operator.put(
        f"{V1}/t", content=b"k\na\n", headers={"Content-Type": "application/xml"}
    )
    assert_problem(resp, 415, "text/csv or application/json")
    resp = tenant.operator.put(f"{V1}/t", content=b"k\na\n")
    assert_problem(resp, 415)
    big = b"k,v\n" + b"a," + b"x" * (4 * 1024 * 1024) + b"\n"
    assert_problem(put_csv(tenant.operator, "t", big), 413)
    assert_problem(put_csv(tenant.operator, "t", "k,v\na,1\n", key="nope"), 422, "nope")
    resp = tenant.operator.put(
        f"{V1}/t", json={"key": "k", "rows": [{"k": "a"}]}, params={"key": "k"}
    )
    assert_problem(resp, 422, "?key= is for CSV")
    assert_problem(put_csv(tenant.operator, "-bad", "k\na\n"), 422)
    assert_problem(tenant.viewer.get(f"{V1}/t"), 404)


def test_unknown_and_other_tenants_tables_are_404(tenant: Tenant, admin: Api) -> None:
    assert_problem(tenant.viewer.get(f"{V1}/nothing"), 404, "nothing")
    assert_problem(tenant.viewer.get(f"{V1}/nothing/versions"), 404)
    assert_problem(tenant.viewer.get(f"{V1}/nothing/rows/a"), 404)
    assert_problem(tenant.operator.delete(f"{V1}/nothing"), 404)

    assert put_csv(tenant.operator, "secret", "k,v\na,1\n").status_code == 200
    other = unique("t")
    password = "pw-" * 6
    resp = admin.post(
        "/api/v1/tenants",
        json={
            "id": other,
            "name": other,
            "admin": {"username": f"{other}-a", "password": password},
        },
    )
    assert resp.status_code == 201, resp.text
    with tenant.anonymous.as_token(tenant.anonymous.login(f"{other}-a", password)) as stranger:
        assert stranger.get(V1).json()["total"] == 0
        assert_problem(stranger.get(f"{V1}/secret"), 404, "secret")
        assert_problem(stranger.get(f"{V1}/secret/rows/a"), 404)
        assert_problem(stranger.get(f"{V1}/secret/versions"), 404)
        assert_problem(stranger.delete(f"{V1}/secret"), 404)
        # The same name in another tenant is another table.
        assert put_csv(stranger, "secret", "k\nmine\n").json()["version"] == 1
    assert rows_of(tenant.viewer, "secret")["rows"]["items"] == [{"k": "a", "v": 1}]


def test_viewers_read_operators_write(tenant: Tenant) -> None:
    assert_problem(put_csv(tenant.viewer, "t", "k\na\n"), 403)
    assert_problem(tenant.viewer.put(f"{V1}/t", json={"key": "k", "rows": [{"k": "a"}]}), 403)
    assert_problem(tenant.viewer.get(f"{V1}/t"), 404)  # nothing was made
    assert put_csv(tenant.operator, "t", "k\na\n").status_code == 200
    assert_problem(tenant.viewer.delete(f"{V1}/t"), 403)
    assert rows_of(tenant.viewer, "t")["row_count"] == 1
    assert tenant.anonymous.get(V1).status_code == 401


def test_delete_removes_the_table_and_history_and_is_audited(tenant: Tenant) -> None:
    assert put_csv(tenant.operator, "t", "k\na\n").status_code == 200
    assert put_csv(tenant.operator, "t", "k\nb\n").status_code == 200
    assert tenant.operator.delete(f"{V1}/t").status_code == 204
    assert_problem(tenant.viewer.get(f"{V1}/t"), 404)
    # A new upload of the name starts a new history.
    made = put_csv(tenant.operator, "t", "k\nc\n").json()
    assert made["version"] == 1
    assert tenant.viewer.get(f"{V1}/t/versions").json()["total"] == 1
    audit = tenant.admin.get("/api/v1/audit", params={"limit": 100}).json()["items"]
    actions = [
        (e["action"], e["entity_id"]) for e in audit if e["entity_type"] == "reference_table"
    ]
    assert actions.count(("replace", "t")) == 3 and ("delete", "t") in actions


def test_the_largest_table_uploads_and_pages(tenant: Tenant) -> None:
    body = "sku,price\n" + "".join(f"S{i:06d},{i}.5\n" for i in range(MAX_ROWS))
    resp = put_csv(tenant.operator, "big", body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["row_count"] == MAX_ROWS
    last = rows_of(tenant.viewer, "big", limit=1, offset=MAX_ROWS - 1)["rows"]["items"]
    assert last == [{"sku": f"S{MAX_ROWS - 1:06d}", "price": MAX_ROWS - 0.5}]
    # A replace prunes nothing yet, and reads see the new one.
    assert put_csv(tenant.operator, "big", "sku,price\nA,1\n").json()["row_count"] == 1


def test_the_document_describes_the_routes_with_examples(tenant: Tenant) -> None:
    doc = tenant.anonymous.get("/openapi.json").json()
    put = doc["paths"][f"{V1}/{{table}}"]["put"]
    content = put["requestBody"]["content"]
    assert content["text/csv"]["example"].startswith("product_id,")
    assert content["application/json"]["example"]["key"] == "product_id"
    assert {"413", "415", "422", "403"} <= set(put["responses"])
    for path in (V1, f"{V1}/{{table}}", f"{V1}/{{table}}/rows/{{key}}", f"{V1}/{{table}}/versions"):
        assert "get" in doc["paths"][path], path


def test_metrics_count_lookups_and_cache_hits(tenant: Tenant, admin: Api) -> None:
    text = admin.get("/metrics").text
    assert "roost_reference_lookups_total" in text
    assert "roost_reference_cache_hits_total" in text
