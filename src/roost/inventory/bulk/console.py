"""Console page of bulk import: a CSV or JSON file checked by a dry run, then applied.

The page only explains and collects the file; the browser sends it to the API's
``POST /api/v1/devices/import`` (first with ``dry_run=true``), and shows the API's report.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, PageDep
from roost.inventory.bulk.importer import MAX_IMPORT_ROWS, ON_EXISTING
from roost.inventory.bulk.parse import CSV_COLUMNS, GROUP_SEPARATOR, TAG_PREFIX
from roost.inventory.console import SECTIONS

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# What a row whose device exists does, in the words of the form.
ON_EXISTING_LABELS = {
    "error": "is a bad row",
    "skip": "is left as it is",
    "update": "is updated with the row's fields, tags and groups",
}


@router.get("/inventory/import")
async def import_page(page: PageDep) -> Response:
    """Bulk import of devices: upload or paste a file, dry-run it, then apply it."""
    return page.render(
        "bulk/import.html",
        sections=SECTIONS,
        current="import",
        csv_columns=CSV_COLUMNS,
        tag_prefix=TAG_PREFIX,
        group_separator=GROUP_SEPARATOR,
        on_existing=[(value, ON_EXISTING_LABELS[value]) for value in ON_EXISTING],
        max_rows=MAX_IMPORT_ROWS,
    )
