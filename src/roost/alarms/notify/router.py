"""HTTP routes of notifications: channels (and a test message), silences, the delivery log."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Response

from roost.alarms.notify.channels import SORTS as CHANNEL_SORTS
from roost.alarms.notify.schemas import (
    ChannelIn,
    ChannelListParams,
    ChannelOut,
    ChannelPatch,
    NotificationListParams,
    NotificationOut,
    SilenceIn,
    SilenceListParams,
    SilenceOut,
    SilencePatch,
    TestResult,
)
from roost.alarms.notify.service import LOG_SORTS, NotificationService
from roost.alarms.notify.silences import SORTS as SILENCE_SORTS
from roost.http import params as p
from roost.http import schemas as s
from roost.http.deps import ActorDep, get_roost
from roost.store.queries import Page


class Services(Protocol):
    """What these routes use of the running Roost."""

    @property
    def notifications(self) -> NotificationService: ...


RoostDep = Annotated[Services, Depends(get_roost)]

router = APIRouter(tags=["notify"])
ERRORS = s.problem_responses(403, 404, 409, 422)


# -- channels ---------------------------------------------------------------------------------


@router.post(
    "/notification-channels",
    response_model=ChannelOut,
    status_code=201,
    operation_id="create_notification_channel",
    summary="Add a notification channel (email, webhook or slack)",
    responses=ERRORS,
)
async def create_notification_channel(
    roost: RoostDep, actor: ActorDep, body: ChannelIn
) -> dict[str, Any]:
    return await roost.notifications.create_channel(actor, body.model_dump())


@router.get(
    "/notification-channels",
    response_model=s.Page[ChannelOut],
    operation_id="list_notification_channels",
    openapi_extra=p.sortable(CHANNEL_SORTS),
    summary="List notification channels",
    responses=ERRORS,
)
async def list_notification_channels(
    roost: RoostDep, actor: ActorDep, query: Annotated[ChannelListParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.notifications.list_channels(actor, query.page(), query.kind)


@router.get(
    "/notification-channels/{channel_id}",
    response_model=ChannelOut,
    operation_id="get_notification_channel",
    summary="Get a notification channel",
    responses=ERRORS,
)
async def get_notification_channel(
    roost: RoostDep, actor: ActorDep, channel_id: str
) -> dict[str, Any]:
    return await roost.notifications.get_channel(actor, channel_id)


@router.patch(
    "/notification-channels/{channel_id}",
    response_model=ChannelOut,
    operation_id="update_notification_channel",
    summary="Change a notification channel",
    responses=ERRORS,
)
async def update_notification_channel(
    roost: RoostDep, actor: ActorDep, channel_id: str, body: ChannelPatch
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    return await roost.notifications.update_channel(actor, channel_id, changes)


@router.delete(
    "/notification-channels/{channel_id}",
    status_code=204,
    operation_id="delete_notification_channel",
    summary="Delete a notification channel (its queued messages then fail)",
    responses=ERRORS,
)
async def delete_notification_channel(
    roost: RoostDep, actor: ActorDep, channel_id: str
) -> Response:
    await roost.notifications.delete_channel(actor, channel_id)
    return Response(status_code=204)


@router.post(
    "/notification-channels/{channel_id}/test",
    response_model=TestResult,
    operation_id="test_notification_channel",
    summary="Send a test message to a channel now and answer whether it was delivered",
    responses=ERRORS,
)
async def test_notification_channel(
    roost: RoostDep, actor: ActorDep, channel_id: str
) -> dict[str, Any]:
    return await roost.notifications.test_channel(actor, channel_id)


# -- silences ---------------------------------------------------------------------------------


@router.post(
    "/silences",
    response_model=SilenceOut,
    status_code=201,
    operation_id="create_silence",
    summary="Silence alerts matching labels for a while",
    responses=ERRORS,
)
async def create_silence(roost: RoostDep, actor: ActorDep, body: SilenceIn) -> dict[str, Any]:
    values = body.model_dump()
    values["matchers"] = body.matchers.model_dump(exclude_none=True)
    return await roost.notifications.create_silence(actor, values)


@router.get(
    "/silences",
    response_model=s.Page[SilenceOut],
    operation_id="list_silences",
    openapi_extra=p.sortable(SILENCE_SORTS),
    summary="List silences (filter by state: active, pending, expired)",
    responses=ERRORS,
)
async def list_silences(
    roost: RoostDep, actor: ActorDep, query: Annotated[SilenceListParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.notifications.list_silences(actor, query.page(), query.state)


@router.get(
    "/silences/{silence_id}",
    response_model=SilenceOut,
    operation_id="get_silence",
    summary="Get a silence",
    responses=ERRORS,
)
async def get_silence(roost: RoostDep, actor: ActorDep, silence_id: str) -> dict[str, Any]:
    return await roost.notifications.get_silence(actor, silence_id)


@router.patch(
    "/silences/{silence_id}",
    response_model=SilenceOut,
    operation_id="update_silence",
    summary="Change a silence (end it early by setting ends_at)",
    responses=ERRORS,
)
async def update_silence(
    roost: RoostDep, actor: ActorDep, silence_id: str, body: SilencePatch
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    if body.matchers is not None:
        changes["matchers"] = body.matchers.model_dump(exclude_none=True)
    return await roost.notifications.update_silence(actor, silence_id, changes)


@router.delete(
    "/silences/{silence_id}",
    status_code=204,
    operation_id="delete_silence",
    summary="Delete a silence",
    responses=ERRORS,
)
async def delete_silence(roost: RoostDep, actor: ActorDep, silence_id: str) -> Response:
    await roost.notifications.delete_silence(actor, silence_id)
    return Response(status_code=204)


# -- the delivery log -------------------------------------------------------------------------


@router.get(
    "/notifications",
    response_model=s.Page[NotificationOut],
    operation_id="list_notifications",
    openapi_extra=p.sortable(LOG_SORTS),
    summary="The delivery log: each message, its attempts and errors (filter by channel, status)",
    responses=ERRORS,
)
async def list_notifications(
    roost: RoostDep, actor: ActorDep, query: Annotated[NotificationListParams, Query()]
) -> Page[dict[str, Any]]:
    return await roost.notifications.list_notifications(
        actor, query.page(), channel_id=query.channel_id, status=query.status
    )


@router.get(
    "/notifications/{notification_id}",
    response_model=NotificationOut,
    operation_id="get_notification",
    summary="One message of the delivery log",
    responses=ERRORS,
)
async def get_notification(
    roost: RoostDep, actor: ActorDep, notification_id: str
) -> dict[str, Any]:
    return await roost.notifications.get_notification(actor, notification_id)
