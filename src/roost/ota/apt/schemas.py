"""Request and response bodies of the APT routes (the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from roost.http import schemas as s
from roost.ota.apt.service import MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS


class ChannelIn(s.Body):
    """A new channel: its name (the suite in apt's sources line) and who sees it."""

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="The suite: `deb <repository> <name> main`",
        examples=["stable"],
    )
    audience: str = Field(
        default="all",
        min_length=3,
        max_length=200,
        pattern=r"^(all|(site|group):[A-Za-z0-9][A-Za-z0-9._:-]*)$",
        description="`all`, `site:<site id>` or `group:<group id>`: the devices that see it",
        examples=["all", "site:store-12"],
    )
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)


class ChannelOut(s.Out):
    """A channel."""

    name: str
    audience: str
    description: str
    packages: int = Field(description="Packages published into it")
    repository: str = Field(description="The repository's path: `deb <server><path> <name> main`")
    created_by: str
    created_at: datetime
    updated_at: datetime


class PublishIn(s.Body):
    """An artifact of type `deb` to publish into a channel."""

    artifact_id: str = Field(min_length=1, max_length=128)


class PublishedOut(s.Out):
    """A package published into a channel."""

    artifact_id: str
    package: str
    version: str
    architecture: str
    filename: str | None
    size: int | None
    sha256: str | None
    published_by: str
    published_at: datetime


class ChannelWithPackages(ChannelOut):
    """A channel and its packages."""

    items: list[PublishedOut]
