"""Console pages of the credentials room: a device's tokens, certificates and keys.

The device's Credentials tab lists the three kinds (read through the same services as
``GET /api/v1/devices/{id}/tokens|certificates|keys``); issuing, revoking and rotating are sent
by the browser to those API routes, and a new secret is shown once in the page
(``credentials/_secret.html``), never stored by the console.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from roost.console.web import ConsoleRoute, PageDep
from roost.credentials.certificates.ca import MAX_DEVICE_DAYS
from roost.credentials.certificates.service import SORTS as CERTIFICATE_SORTS
from roost.credentials.keys import sas
from roost.credentials.keys.service import KEY_SORTS
from roost.credentials.tokens.service import TOKEN_SORTS
from roost.store.queries import PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# Rows per credential table: a device holds a handful of each; three tables share one screen.
TABLE_SIZE = 20


@dataclass(frozen=True, slots=True)
class TablePaging:
    """Paging of one of several tables on a page: its query parameters carry a prefix
    (``tokens_page``, ``tokens_sort``), so paging one table leaves the others where they are.
    Offers what ``ui.pager`` and ``ui.th`` use of :class:`roost.console.web.Paging`."""

    request: Request
    prefix: str
    number: int
    size: int
    sort: str | None

    @classmethod
    def from_request(
        cls, request: Request, prefix: str, *, sorts: tuple[str, ...], default_sort: str
    ) -> TablePaging:
        """Read ``{prefix}_page`` and ``{prefix}_sort``; bad values fall back to the defaults."""
        raw_page = request.query_params.get(f"{prefix}_page", "1")
        number = int(raw_page) if raw_page.isdigit() and int(raw_page) > 0 else 1
        sort = request.query_params.get(f"{prefix}_sort") or default_sort
        if sort.lstrip("-") not in sorts:
            sort = default_sort
        return cls(request, prefix, min(number, 1_000_000), TABLE_SIZE, sort)

    @property
    def request_page(self) -> PageRequest:
        """The services' paging request."""
        return PageRequest(limit=self.size, offset=(self.number - 1) * self.size, sort=self.sort)

    def pages(self, total: int) -> int:
        """How many pages ``total`` rows make."""
        return max(1, math.ceil(total / self.size))

    def link(self, **changes: Any) -> str:
        """This page's URL with this table's parameters changed (``None`` removes one)."""
        query = dict(self.request.query_params)
        for key, value in changes.items():
            name = f"{self.prefix}_{key}"
            if value is None or value == "":
                query.pop(name, None)
            else:
                query[name] = str(value)
        encoded = urlencode(query)
        path = self.request.url.path
        return f"{path}?{encoded}#{self.prefix}" if encoded else f"{path}#{self.prefix}"

    def sort_link(self, fieldname: str) -> str:
        """The link that sorts by ``fieldname``, descending when it is already ascending."""
        new = f"-{fieldname}" if self.sort == fieldname else fieldname
        return self.link(sort=new, page=None)


def credential_status(row: dict[str, Any], expires_key: str, now: datetime) -> str:
    """``revoked``, ``expired`` or ``active``, from the API's own fields of a credential."""
    if row.get("revoked_at") is not None:
        return "revoked"
    expires = row.get(expires_key)
    if isinstance(expires, datetime):
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= now:
            return "expired"
    return "active"


@router.get("/devices/{device_id}/credentials")
async def device_credentials(page: PageDep, device_id: str) -> HTMLResponse:
    """A device's tokens, certificates and keys; issue, revoke and rotate (operators)."""
    roost = page.roost
    device = await roost.devices.get(page.actor, device_id)
    paging = {
        "tokens": TablePaging.from_request(
            page.request, "tokens", sorts=TOKEN_SORTS, default_sort="-created_at"
        ),
        "certificates": TablePaging.from_request(
            page.request, "certificates", sorts=CERTIFICATE_SORTS, default_sort="-created_at"
        ),
        "keys": TablePaging.from_request(
            page.request, "keys", sorts=KEY_SORTS, default_sort="-created_at"
        ),
    }
    tokens = await roost.credentials.list_tokens(
        page.actor, device_id, paging["tokens"].request_page
    )
    certificates = await roost.certificates.list_certificates(
        page.actor, device_id, paging["certificates"].request_page
    )
    keys = await roost.keys.list_keys(page.actor, device_id, paging["keys"].request_page)
    now = roost.clock()
    return page.render(
        "credentials/device.html",
        device=device,
        tab="credentials",
        paging=paging,
        tokens=tokens,
        certificates=certificates,
        keys=keys,
        token_status={t["id"]: credential_status(t, "expires_at", now) for t in tokens.items},
        certificate_status={
            c["id"]: credential_status(c, "not_after", now) for c in certificates.items
        },
        key_status={k["id"]: credential_status(k, "", now) for k in keys.items},
        sas_resource=sas.device_resource(page.actor.tenant_id, device_id),
        max_days=MAX_DEVICE_DAYS,
    )
