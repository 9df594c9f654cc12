"""The device ACL (roost.mqtt.topics.DeviceTopics filled with every room's topics): every allowed
and refused shape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.commands import mqtt as commands
from roost.core.devicelink import DeviceTopic
from roost.jobs import mqtt as jobs
from roost.mqtt.topics import topic_matches
from roost.runtime import device_topics
from roost.state import mqtt as state
from roost.telemetry.ingest import mqtt as ingest

DEV = "dev-1"
ACL = device_topics()
publish_route = ACL.publish_route
may_subscribe = ACL.may_subscribe


@pytest.mark.parametrize(
    ("topic", "route"),
    [
        ("devices/dev-1/telemetry", ingest.TELEMETRY),
        ("devices/dev-1/events", ingest.EVENTS),
        ("dev-1", ingest.AUTO),
        ("devices/dev-1/state/reported", state.REPORTED),
        ("devices/dev-1/commands/c-9/response", commands.RESPONSE),
        ("devices/dev-1/jobs/job-3/update", jobs.UPDATE),
        ("devices/dev-1/state/get", state.GET),
        ("devices/dev-1/jobs/get", jobs.GET),
        ("devices/dev-1/jobs/start-next", jobs.START_NEXT),
        ("devices/dev-1/jobs/get/update", jobs.UPDATE),
        ("devices/dev-1/state/name/lights/reported", state.REPORTED),
        ("devices/dev-1/state/name/lights/get", state.GET),
    ],
)
def test_a_device_publishes_to_its_own_topics(topic: str, route: DeviceTopic) -> None:
    assert publish_route(DEV, topic) is route
    assert route.is_ingest == (route in (ingest.TELEMETRY, ingest.EVENTS, ingest.AUTO))


@pytest.mark.parametrize(
    "topic",
    [
        "devices/dev-2/telemetry", "dev-2", "devices/dev-1", "devices/dev-1/",
        "devices/dev-1/other",
        "devices/dev-1/telemetry/x", "devices/dev-1/state/desired", "devices/dev-1/state/delta",
        "devices/dev-1/commands/c-9", "devices/dev-1/commands//response",
        "devices/dev-1/jobs/notify", "devices/dev-1/jobs/j/update/accepted", "$SYS/broker",
        "devices/dev-1/state/get/accepted", "devices/dev-1/jobs/start-next/x",
        "devices/dev-2/jobs/start-next", "devices/dev-1/state/update",
        "devices/dev-1/state/name//reported", "devices/dev-1/state/name/x/delta",
        "devices/dev-1/state/names/x/reported", "devices/dev-2/state/name/x/reported",
        "/devices/dev-1/telemetry", "devices/dev-10/telemetry", "dev-1/telemetry", "",
    ],
)  # fmt: skip
def test_anything_else_is_not_publishable(topic: str) -> None:
    assert publish_route(DEV, topic) is None


@pytest.mark.parametrize(
    "topic_filter",
    [
        "devices/dev-1/commands/#", "devices/dev-1/commands/+", "devices/dev-1/commands/c-1",
        "devices/dev-1/state/desired", "devices/dev-1/state/delta", "devices/dev-1/jobs/notify",
        "devices/dev-1/jobs/+/update/accepted", "devices/dev-1/jobs/+/update/rejected",
        "devices/dev-1/jobs/#", "devices/dev-1/telemetry/rejected",
        "devices/dev-1/events/rejected", "devices/dev-1/telemetry/rejected/#",
    ],
)  # fmt: skip
def test_a_device_subscribes_inside_its_own_subtrees(topic_filter: str) -> None:
    assert may_subscribe(DEV, topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#", "+", "devices/#", "devices/+/commands/#", "devices/dev-1/#", "devices/dev-1/+",
        "devices/dev-1/+/delta", "devices/dev-1/telemetry", "devices/dev-2/commands/#",
        "devices/dev-1", "dev-1", "+/dev-1/commands/#", "$SYS/#", "devices/dev-1/telemetry/#",
        "devices/dev-1/telemetry/+", "devices/dev-2/telemetry/rejected", "devices/dev-1/+/rejected",
    ],
)  # fmt: skip
def test_filters_reaching_outside_are_refused(topic_filter: str) -> None:
    assert not may_subscribe(DEV, topic_filter)


NAMES = [
    "devices", "dev-1", "dev-2", "commands", "state", "jobs", "telemetry", "events", "rejected",
]  # fmt: skip
LEVEL = st.sampled_from([*NAMES, "x", "+", "#"])


@given(st.lists(LEVEL, min_size=1, max_size=6), st.lists(st.sampled_from(
    [*NAMES, "x"]), min_size=1, max_size=6))  # fmt: skip
def test_an_allowed_filter_only_matches_the_devices_own_subtrees(
    levels: list[str], topic_levels: list[str]
) -> None:
    topic_filter = "/".join(levels)
    if "#" in levels[:-1]:
        return  # not a valid filter
    topic = "/".join(topic_levels)
    if may_subscribe(DEV, topic_filter) and topic_matches(topic_filter, topic):
        assert topic_levels[:2] == ["devices", DEV]
        assert topic_levels[2] in {"commands", "state", "jobs"} or topic_levels[2:4] in (
            ["telemetry", "rejected"],
            ["events", "rejected"],
        )
