"""``roost reference upload`` and ``roost reference list``, run as real subprocesses."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import Cli, any_cli  # noqa: F401  (the fixture, on both backends)


def test_upload_and_list(any_cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    catalog = tmp_path / "products.csv"
    catalog.write_text("name,product_id,price\nBeans,P1,18.5\nMilk,P2,2\n")
    out = any_cli.ok("reference", "upload", "products", str(catalog), "--key", "product_id")
    assert "products: version 1, 2 row(s), key product_id" in out
    stores = tmp_path / "stores.txt"
    stores.write_text('{"key": "store", "rows": [{"store": "S1", "city": "Paris"}]}')
    out = any_cli.ok(
        "reference", "upload", "stores", "-", "--format", "json", stdin=stores.read_bytes()
    )
    assert "stores: version 1, 1 row(s), key store" in out
    out = any_cli.ok("reference", "upload", "products", str(catalog), "--key", "product_id")
    assert "version 2" in out

    listed = any_cli.json("reference", "list")
    assert [(t["name"], t["version"], t["row_count"], t["key"]) for t in listed] == [
        ("products", 2, 2, "product_id"),
        ("stores", 1, 1, "store"),
    ]
    assert listed[0]["updated_by"] == "cli"
    table = any_cli.ok("reference", "list")
    assert "products" in table and "product_id, name, price" not in table
    assert "name, product_id, price" in table


def test_a_bad_file_is_refused_with_its_lines(any_cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    bad = tmp_path / "bad.csv"
    bad.write_text("k,v\na,1\na,2\nb\n")
    proc = any_cli("reference", "upload", "t", str(bad))
    assert proc.returncode == 1
    assert "2 of 3 row(s) are invalid (first: line 3)" in proc.stderr
    assert "row 2" in proc.stderr and "duplicate key 'a' (first on line 2)" in proc.stderr
    assert "row 3" in proc.stderr and "has 1 cells" in proc.stderr
    assert any_cli.json("reference", "list") == []
    proc = any_cli("reference", "upload", "t", str(tmp_path / "table.xlsx"))
    assert proc.returncode == 2 and "--format" in proc.stderr
    proc = any_cli("reference", "upload", "t", str(bad), "--tenant", "nope")
    assert proc.returncode == 1 and "nope" in proc.stderr
