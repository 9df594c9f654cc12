"""Console pages of notifications: channels (create, test, delete), silences (create, expire,
delete) and the delivery log.

Pages read through :class:`~roost.alarms.notify.service.NotificationService` as
``/api/v1/notification-channels``, ``/api/v1/silences`` and ``/api/v1/notifications`` do; every
change is sent by the browser to those routes (``static/console.js``).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Final

from fastapi import APIRouter
from starlette.responses import Response

from roost.alarms.notify.router import Services
from roost.alarms.rules.model import SEVERITIES
from roost.console.web import ConsoleRoute, PageDep
from roost.store.queries import MAX_LIMIT, PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

KINDS: Final = ("email", "webhook", "slack")
GROUP_LABELS: Final = ("site_id", "type", "device_id", "severity", "rule_id")
SILENCE_STATES: Final = ("active", "pending", "expired")
DELIVERY_STATUSES: Final = ("queued", "sending", "delivered", "failed")
#: How long a new silence lasts unless the form says otherwise.
DEFAULT_SILENCE: Final = timedelta(hours=2)
#: What each kind's config holds, as the create form shows it.
CONFIG_EXAMPLES: Final = {
    "email": '{"to": ["ops@example.com"]}',
    "webhook": '{"url": "https://ops.example.com/roost", "secret": "s3cret", "timeout_s": 10}',
    "slack": '{"url": "https://hooks.slack.com/services/T000/B000/XXXX"}',
}


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


@router.get("/notifications/channels")
async def channel_list(page: PageDep) -> Response:
    """Notification channels; operators add, test and delete them."""
    roost: Services = page.roost
    paging = page.paging(default_sort="name")
    kind = _choice(page.request.query_params.get("kind"), KINDS)
    channels = await roost.notifications.list_channels(page.actor, paging.request_page, kind)
    return page.render(
        "notify/channels.html",
        channels=channels,
        paging=paging,
        chosen=kind,
        kinds=KINDS,
        group_labels=GROUP_LABELS,
        examples=CONFIG_EXAMPLES,
    )


@router.get("/notifications/silences")
async def silence_list(page: PageDep) -> Response:
    """Silences (active and pending by default); operators add, expire and delete them."""
    roost: Services = page.roost
    paging = page.paging(default_sort="-starts_at")
    state = _choice(page.request.query_params.get("state"), SILENCE_STATES)
    silences = await roost.notifications.list_silences(page.actor, paging.request_page, state)
    ends = (page.roost.clock() + DEFAULT_SILENCE).astimezone(UTC)
    return page.render(
        "notify/silences.html",
        silences=silences,
        paging=paging,
        chosen=state,
        states=SILENCE_STATES,
        severities=SEVERITIES,
        default_end=ends.strftime("%Y-%m-%dT%H:%M"),
        prefill={
            k: (page.request.query_params.get(k) or "")[:128]
            for k in ("device_id", "group_id", "site_id", "type", "severity")
        },
    )


@router.get("/notifications/log")
async def delivery_log(page: PageDep) -> Response:
    """The delivery log, newest first: each message, its attempts and errors."""
    roost: Services = page.roost
    paging = page.paging(default_sort="-created_at")
    params = page.request.query_params
    status = _choice(params.get("status"), DELIVERY_STATUSES)
    channel_id = (params.get("channel_id") or "")[:32] or None
    log = await roost.notifications.list_notifications(
        page.actor, paging.request_page, channel_id=channel_id, status=status
    )
    channels = await roost.notifications.list_channels(
        page.actor, PageRequest(limit=MAX_LIMIT, sort="name")
    )
    return page.render(
        "notify/log.html",
        log=log,
        paging=paging,
        chosen={"status": status, "channel_id": channel_id},
        statuses=DELIVERY_STATUSES,
        channels=channels,
    )
