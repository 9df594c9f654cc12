"""Console pages of the inventory: sites, customers, manufacturers, models, firmware and groups.

The five plain collections are one data-driven page: a :class:`Collection` says which inventory
kind it lists, where its API lives, the table's columns, the form's fields and where a record
links to (its devices, the records that refer to it). Groups, which have members and a rule,
have pages of their own. Pages read through the inventory and device services; every change is
sent by the browser to the API (``/api/v1/...``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from roost.console.web import ConsoleRoute, Page, PageDep
from roost.inventory.devices.query import DeviceQuery
from roost.inventory.devices.service import DeviceService
from roost.inventory.rules import FILTER_FIELDS
from roost.inventory.service import RESOURCES, InventoryService
from roost.store.queries import PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# Records of a referenced kind offered as suggestions in a form (a datalist): enough for the
# sites of a large retail fleet; past it the field still takes any id typed in.
REFERENCE_CHOICES = 500

FieldKind = Literal["text", "textarea", "int", "float", "bool", "time", "ref"]


class Services(Protocol):
    """What the inventory pages use of the running Roost."""

    @property
    def inventory(self) -> InventoryService: ...

    @property
    def devices(self) -> DeviceService: ...


def _fill(template: str, record: Mapping[str, Any]) -> str | None:
    """A URL template (``/devices?site={id}``) filled from a record; None when a value is unset."""
    values = {k: quote(str(v), safe="") for k, v in record.items() if v not in (None, "")}
    try:
        return template.format_map(_Strict(values))
    except _Missing:
        return None


class _Missing(Exception):
    """A URL template names a value the record does not have."""


class _Strict(dict[str, Any]):
    """Values of a URL template; a missing one stops the filling."""

    def __missing__(self, key: str) -> Any:
        raise _Missing(key)


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: a record field, optionally sortable and linking somewhere."""

    key: str
    label: str
    sortable: bool = False
    link: str | None = None

    def href(self, record: Mapping[str, Any]) -> str | None:
        """Where the cell links to, or None."""
        return _fill(self.link, record) if self.link else None


@dataclass(frozen=True, slots=True)
class FormField:
    """A field of a collection's create and edit forms, named as the API's body field."""

    name: str
    label: str
    kind: FieldKind = "text"
    required: bool = False
    hint: str = ""
    ref: str | None = None  # the inventory kind a reference field names

    @property
    def data_type(self) -> str | None:
        """console.js's ``data-type`` for the field."""
        return {"int": "int", "float": "float", "bool": "bool", "time": "time"}.get(self.kind)

    def value(self, record: Mapping[str, Any]) -> str:
        """The record's value as the form shows it."""
        raw = record.get(self.name)
        if raw is None:
            return ""
        if self.kind == "time" and isinstance(raw, datetime):
            moment = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
            return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return str(raw)


@dataclass(frozen=True, slots=True)
class Link:
    """A page a record leads to: its devices, or the records that refer to it."""

    label: str
    url: str

    def href(self, record: Mapping[str, Any]) -> str | None:
        """The link for a record."""
        return _fill(self.url, record)


@dataclass(frozen=True, slots=True)
class Collection:
    """One inventory kind as a console page: what it lists, edits and links to."""

    slug: str  # /inventory/<slug>
    kind: str  # the inventory service's kind
    api: str  # the API collection
    title: str
    noun: str
    name_key: str  # the field a record is called by
    columns: tuple[Column, ...]
    fields: tuple[FormField, ...]
    links: tuple[Link, ...] = ()
    filter_labels: Mapping[str, str] | None = None
    default_sort: str = "name"
    about: str = ""

    @property
    def filters(self) -> tuple[tuple[str, str], ...]:
        """The list's filter fields (the API's) with their labels."""
        labels = self.filter_labels or {}
        return tuple((f, labels.get(f, f)) for f in RESOURCES[self.kind].filters)

    @property
    def sorts(self) -> tuple[str, ...]:
        """Fields the table may be sorted by."""
        return RESOURCES[self.kind].sorts

    def title_of(self, record: Mapping[str, Any]) -> str:
        """What a record is called."""
        return str(record.get(self.name_key) or record.get("id"))


ID_FIELD = FormField("id", "Id", hint="Letters, digits and . _ : - (empty: generated)")
NOTES = FormField("notes", "Notes", "textarea")

COLLECTIONS: dict[str, Collection] = {
    c.slug: c
    for c in (
        Collection(
            slug="sites",
            kind="site",
            api="/api/v1/sites",
            title="Sites",
            noun="site",
            name_key="name",
            columns=(
                Column("name", "Name", True, "/inventory/sites/{id}"),
                Column("id", "Id", True),
                Column("city", "City", True),
                Column("country", "Country", True),
                Column("timezone", "Time zone"),
                Column("customer_id", "Customer", False, "/inventory/customers/{customer_id}"),
            ),
            fields=(
                ID_FIELD,
                FormField("name", "Name", required=True),
                FormField("customer_id", "Customer", "ref", ref="customer"),
                FormField("address", "Address"),
                FormField("city", "City"),
                FormField("postal_code", "Postal code"),
                FormField("country", "Country", hint="Two letters, e.g. FR"),
                FormField("timezone", "Time zone", hint="IANA name, e.g. Europe/Paris"),
                FormField("latitude", "Latitude", "float"),
                FormField("longitude", "Longitude", "float"),
                NOTES,
            ),
            links=(Link("Devices", "/devices?site={id}"),),
            filter_labels={
                "customer_id": "Customer",
                "city": "City",
                "country": "Country",
                "timezone": "Time zone",
            },
            about="Where devices are installed: a store, a warehouse, a building.",
        ),
        Collection(
            slug="customers",
            kind="customer",
            api="/api/v1/customers",
            title="Customers",
            noun="customer",
            name_key="name",
            columns=(
                Column("name", "Name", True, "/inventory/customers/{id}"),
                Column("id", "Id", True),
                Column("contact_email", "Contact e-mail"),
                Column("updated_at", "Updated", True),
            ),
            fields=(
                ID_FIELD,
                FormField("name", "Name", required=True),
                FormField("contact_email", "Contact e-mail"),
                NOTES,
            ),
            links=(Link("Sites", "/inventory/sites?customer_id={id}"),),
            about="Who the devices and sites belong to or serve.",
        ),
        Collection(
            slug="manufacturers",
            kind="manufacturer",
            api="/api/v1/manufacturers",
            title="Manufacturers",
            noun="manufacturer",
            name_key="name",
            columns=(
                Column("name", "Name", True, "/inventory/manufacturers/{id}"),
                Column("id", "Id", True),
                Column("website", "Website"),
                Column("updated_at", "Updated", True),
            ),
            fields=(
                ID_FIELD,
                FormField("name", "Name", required=True),
                FormField("website", "Website"),
                NOTES,
            ),
            links=(Link("Models", "/inventory/models?manufacturer_id={id}"),),
            about="Who makes the device models.",
        ),
        Collection(
            slug="models",
            kind="device_model",
            api="/api/v1/device-models",
            title="Models",
            noun="model",
            name_key="commercial_name",
            columns=(
                Column("commercial_name", "Name", True, "/inventory/models/{id}"),
                Column("id", "Id", True),
                Column("reference", "Reference", True),
                Column("family", "Family", True),
                Column(
                    "manufacturer_id",
                    "Manufacturer",
                    False,
                    "/inventory/manufacturers/{manufacturer_id}",
                ),
                Column("heartbeat_interval_s", "Heartbeat (s)"),
            ),
            fields=(
                ID_FIELD,
                FormField("reference", "Reference", required=True),
                FormField("commercial_name", "Commercial name", required=True),
                FormField("manufacturer_id", "Manufacturer", "ref", ref="manufacturer"),
                FormField("family", "Family"),
                FormField(
                    "heartbeat_interval_s",
                    "Heartbeat interval (s)",
                    "int",
                    hint="Seconds between heartbeats; empty: the server default",
                ),
                FormField("auto_create_sensors", "Create sensors on first telemetry", "bool"),
                FormField("description", "Description", "textarea"),
            ),
            links=(
                Link("Devices", "/devices?model={id}"),
                Link("Firmware", "/inventory/firmware?model_id={id}"),
            ),
            filter_labels={
                "manufacturer_id": "Manufacturer",
                "family": "Family",
                "reference": "Reference",
            },
            default_sort="commercial_name",
            about="Kinds of devices: a reference, a commercial name, a heartbeat interval.",
        ),
        Collection(
            slug="firmware",
            kind="firmware",
            api="/api/v1/firmware",
            title="Firmware",
            noun="firmware",
            name_key="version",
            columns=(
                Column("version", "Version", True, "/inventory/firmware/{id}"),
                Column("id", "Id", True),
                Column("model_id", "Model", False, "/inventory/models/{model_id}"),
                Column("released_at", "Released", True),
            ),
            fields=(
                ID_FIELD,
                FormField("version", "Version", required=True),
                FormField("model_id", "Model", "ref", ref="device_model"),
                FormField("released_at", "Released at (UTC)", "time"),
                FormField("release_notes", "Release notes", "textarea"),
            ),
            links=(Link("Devices", "/devices?firmware={id}"),),
            filter_labels={"model_id": "Model", "version": "Version"},
            default_sort="-released_at",
            about="Firmware versions devices run, per model.",
        ),
    )
}

# The inventory's sub-navigation: (path, label, key).
SECTIONS = (
    *((f"/inventory/{c.slug}", c.title, c.slug) for c in COLLECTIONS.values()),
    ("/inventory/groups", "Groups", "groups"),
    ("/inventory/import", "Import", "import"),
)


def _services(page: Page) -> Services:
    services: Services = page.roost
    return services


def _text_param(page: Page, name: str) -> str | None:
    value = page.request.query_params.get(name, "").strip()
    return value or None


async def _choices(page: Page, fields: tuple[FormField, ...]) -> dict[str, list[tuple[str, str]]]:
    """For each referenced kind, (id, name) of its first records, offered in forms."""
    inventory = _services(page).inventory
    choices: dict[str, list[tuple[str, str]]] = {}
    for form_field in fields:
        if form_field.ref is None or form_field.ref in choices:
            continue
        listed = await inventory.list(
            page.actor, form_field.ref, PageRequest(limit=REFERENCE_CHOICES, sort="id")
        )
        named = COLLECTION_OF_KIND[form_field.ref].name_key
        choices[form_field.ref] = [(row["id"], str(row.get(named) or "")) for row in listed.items]
    return choices


COLLECTION_OF_KIND = {c.kind: c for c in COLLECTIONS.values()}

PageHandler = Callable[..., Coroutine[Any, Any, Response]]


def _list_page(collection: Collection) -> PageHandler:
    async def list_page(page: PageDep) -> Response:
        paging = page.paging(default_sort=collection.default_sort)
        filters = {name: _text_param(page, name) for name, _ in collection.filters}
        q = _text_param(page, "q")
        listed = await _services(page).inventory.list(
            page.actor, collection.kind, paging.request_page, filters, q
        )
        choices = await _choices(page, collection.fields) if page.can_operate else {}
        return page.render(
            "inventory/collection.html",
            collection=collection,
            sections=SECTIONS,
            current=collection.slug,
            rows=listed.items,
            total=listed.total,
            paging=paging,
            filters=filters,
            q=q or "",
            choices=choices,
        )

    list_page.__doc__ = f"The {collection.title.lower()} of the tenant: a table and a form."
    return list_page


def _record_page(collection: Collection) -> PageHandler:
    async def record_page(page: PageDep, item_id: str) -> Response:
        record = await _services(page).inventory.get(page.actor, collection.kind, item_id)
        choices = await _choices(page, collection.fields) if page.can_operate else {}
        return page.render(
            "inventory/record.html",
            collection=collection,
            sections=SECTIONS,
            current=collection.slug,
            record=record,
            choices=choices,
        )

    record_page.__doc__ = f"One {collection.noun}: its fields, links and edit form."
    return record_page


for _collection in COLLECTIONS.values():
    router.add_api_route(
        f"/inventory/{_collection.slug}",
        _list_page(_collection),
        methods=["GET"],
        name=f"inventory_{_collection.slug}",
    )
    router.add_api_route(
        f"/inventory/{_collection.slug}/{{item_id}}",
        _record_page(_collection),
        methods=["GET"],
        name=f"inventory_{_collection.slug}_record",
    )


@router.get("/inventory")
async def inventory_home(page: PageDep) -> Response:
    """The inventory starts at its sites."""
    return RedirectResponse("/inventory/sites", status_code=303)


# -- groups ------------------------------------------------------------------------------------

# The rule fields of a dynamic group, with the labels and the kinds of record they name.
RULE_FIELDS: tuple[tuple[str, str, str], ...] = tuple(
    (name, label, kind)
    for name, label, kind in (
        ("site_id", "Site", "site"),
        ("model_id", "Model", "device_model"),
        ("firmware_id", "Firmware", "firmware"),
        ("customer_id", "Customer", "customer"),
    )
    if name in FILTER_FIELDS
)
RULE_REFERENCES = tuple(
    FormField(name, label, "ref", ref=kind) for name, label, kind in RULE_FIELDS
)
GROUP_SORTS = RESOURCES["group"].sorts


@router.get("/inventory/groups")
async def groups_page(page: PageDep) -> Response:
    """Static and dynamic groups: a table and the forms that create them."""
    paging = page.paging(default_sort="name")
    q = _text_param(page, "q")
    listed = await _services(page).inventory.list(page.actor, "group", paging.request_page, {}, q)
    choices = await _choices(page, RULE_REFERENCES) if page.can_operate else {}
    return page.render(
        "inventory/groups.html",
        sections=SECTIONS,
        current="groups",
        rows=listed.items,
        total=listed.total,
        paging=paging,
        q=q or "",
        rule_fields=RULE_FIELDS,
        choices=choices,
    )


@router.get("/inventory/groups/{group_id}")
async def group_page(page: PageDep, group_id: str) -> Response:
    """A group, its rule or its static members (paginated), and its edit forms."""
    services = _services(page)
    group = await services.inventory.get(page.actor, "group", group_id)
    paging = page.paging(default_sort="id")
    q = _text_param(page, "q")
    members = await services.devices.list(
        page.actor, DeviceQuery(group=group_id, q=q), paging.request_page
    )
    choices = await _choices(page, RULE_REFERENCES) if page.can_operate else {}
    return page.render(
        "inventory/group.html",
        sections=SECTIONS,
        current="groups",
        group=group,
        members=members.items,
        total=members.total,
        paging=paging,
        q=q or "",
        rule_fields=RULE_FIELDS,
        choices=choices,
    )
