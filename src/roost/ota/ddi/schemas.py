"""Request and response bodies of the hawkBit DDI API, as hawkBit's clients send and read them.

Unlike the rest of the API, bodies here ignore fields they do not name: update clients written
for hawkBit send fields of several hawkBit versions (``id`` and ``time`` of the old feedback
format, ``timestamp`` and ``code`` of the newer one), and hawkBit itself ignores what it does not
use. What Roost uses is checked as strictly as anywhere else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from roost.http.schemas import contains_nul

Execution = Literal[
    "closed",
    "proceeding",
    "canceled",
    "scheduled",
    "rejected",
    "resumed",
    "downloaded",
    "download",
]
Finished = Literal["success", "failure", "none"]
ConfigMode = Literal["merge", "replace", "remove"]

# hawkBit's own bounds on target attributes (configData): 128 characters per key and value.
MAX_ATTRIBUTE_KEY = 128
MAX_ATTRIBUTE_VALUE = 128
# Attributes per configData call: a device's identity (serial, MAC, versions, hardware) fits.
MAX_ATTRIBUTES = 100
# Messages of one feedback kept (each at most MAX_DETAIL characters): the action's step details
# hold the last ones, within the jobs' 8 KiB bound on status details.
MAX_DETAILS = 50
MAX_DETAIL = 512


class DdiBody(BaseModel):
    """A body from a DDI client: hawkBit's fields, others ignored (see the module docstring)."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def _refuse_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL; refused on every backend alike (as Body does).
        if contains_nul(value):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return value


class Progress(DdiBody):
    """How far the client is: ``cnt`` of ``of`` (chunks, or any unit it likes)."""

    cnt: int = Field(ge=0, le=2**31)
    of: int | None = Field(None, ge=0, le=2**31)


class Result(DdiBody):
    """Whether the action is over for the client, and how it ended."""

    finished: Finished
    progress: Progress | None = None


class Status(DdiBody):
    """An action's status as the client reports it."""

    execution: Execution
    result: Result
    details: list[str] = Field(default_factory=list, max_length=MAX_DETAILS)
    code: int | None = Field(None, description="A client-specific status code (newer hawkBit)")


class FeedbackIn(DdiBody):
    """Feedback on a deployment or cancel action (``…/feedback``)."""

    id: int | str | None = Field(None, description="The action id (hawkBit's old format)")
    time: str | None = None
    status: Status


class ConfigDataIn(DdiBody):
    """The target's attributes (``PUT …/configData``): kept as its ``ddi`` reported state."""

    data: dict[str, str]
    mode: ConfigMode = "merge"
    id: int | str | None = None
    time: str | None = None
    status: dict[str, Any] | None = None

    @field_validator("data")
    @classmethod
    def _bounded(cls, data: dict[str, str]) -> dict[str, str]:
        if len(data) > MAX_ATTRIBUTES:
            raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
        for key, value in data.items():
            if not key or len(key) > MAX_ATTRIBUTE_KEY:
                raise ValueError(f"an attribute name is 1-{MAX_ATTRIBUTE_KEY} characters")
            if len(value) > MAX_ATTRIBUTE_VALUE:
                raise ValueError(f"an attribute value is at most {MAX_ATTRIBUTE_VALUE} characters")
        return data


# -- answers (documented shapes; the routes answer plain dictionaries) --------------------------


class Link(BaseModel):
    """A hypermedia link."""

    href: str


class Polling(BaseModel):
    """How often to poll: ``sleep`` as ``HH:MM:SS``."""

    sleep: str


class ControllerConfig(BaseModel):
    """The controller's configuration."""

    polling: Polling


class ControllerBase(BaseModel):
    """The controller's base resource: polling interval and what it should do next."""

    model_config = ConfigDict(populate_by_name=True)

    config: ControllerConfig
    links: dict[str, Link] = Field(
        alias="_links",
        description="deploymentBase (an update waits), cancelAction (an update was canceled), "
        "configData (Roost wants the target's attributes)",
    )


class ArtifactOut(BaseModel):
    """An artifact of a software module, with its download links."""

    model_config = ConfigDict(populate_by_name=True)

    filename: str
    hashes: dict[str, str] = Field(description="sha1, md5, sha256 (hex)")
    size: int
    links: dict[str, Link] = Field(alias="_links", description="download, download-http, md5sum")


class Chunk(BaseModel):
    """A software module of the update."""

    part: str = Field(description="os (firmware), bApp (application), or the artifact type")
    version: str
    name: str
    artifacts: list[ArtifactOut]


class Deployment(BaseModel):
    """What to download and install, and when."""

    model_config = ConfigDict(populate_by_name=True)

    download: Literal["forced", "attempt", "skip"]
    update: Literal["forced", "attempt", "skip"]
    maintenance_window: Literal["available", "unavailable"] | None = Field(
        None, alias="maintenanceWindow"
    )
    chunks: list[Chunk]


class ActionHistory(BaseModel):
    """The action's status and latest messages, when asked with ``actionHistory``."""

    status: str
    messages: list[str]


class DeploymentBase(BaseModel):
    """An update action (a Roost deployment's action for this device)."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    deployment: Deployment
    action_history: ActionHistory | None = Field(None, alias="actionHistory")


class CancelAction(BaseModel):
    """A cancellation of an update action."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    cancel_action: dict[str, str] = Field(alias="cancelAction", description="{stopId}")
