"""Composing a message for a channel and sending it: e-mail (SMTP), webhook (signed JSON), Slack.

A message is composed once, when its group is flushed, and stored (the payload); every attempt
sends that payload with the channel's current address. Each send is bounded by a timeout and
answers an :class:`~roost.alarms.notify.model.Outcome`: delivered, or an error that is worth a
retry (connection refused, timeout, 5xx, 408, 429) or not (another 4xx, a refused address).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib
import httpx
import orjson

from roost import __version__
from roost.alarms.notify import templates
from roost.alarms.notify.model import Outcome
from roost.config import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Roost-Signature"
TIMESTAMP_HEADER = "X-Roost-Timestamp"
#: Error texts kept in the log are cut to this (a receiver may answer a whole HTML page).
MAX_ERROR_CHARS = 500
#: Statuses a receiver answers when trying again later may succeed.
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
#: Slack answers in well under a second; ten seconds bound a hung connection.
SLACK_TIMEOUT_S = 10.0


def compose(
    channel: Mapping[str, Any],
    labels: Mapping[str, Any],
    alerts: Sequence[Mapping[str, Any]],
    notification_id: str,
) -> tuple[str, dict[str, Any]]:
    """The subject and stored payload of one message of ``channel`` about ``alerts``."""
    config = channel["config"]
    values = templates.context(channel["name"], labels, alerts)
    subject = templates.subject_line(
        templates.render(config.get("subject_template") or templates.DEFAULT_SUBJECT, values)
    )
    kind = channel["kind"]
    if kind == "email":
        body = templates.render(config.get("body_template") or templates.DEFAULT_BODY, values)
        return subject, {"subject": subject, "text": body}
    if kind == "slack":
        text = templates.render(config.get("text_template") or templates.DEFAULT_SLACK_TEXT, values)
        return subject, {"text": text}
    document = {
        "version": "1",
        "notification_id": notification_id,
        "channel": {"id": channel["id"], "name": channel["name"]},
        "status": values["status"],
        "group_labels": dict(labels),
        "firing": len(values["firing"]),
        "resolved": len(values["resolved"]),
        "subject": subject,
        "alerts": [dict(a) for a in alerts],
    }
    return subject, {"json": orjson.loads(orjson.dumps(document, option=orjson.OPT_UTC_Z))}


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _describe(exc: BaseException) -> str:
    return _cut(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class Senders:
    """Sends stored payloads to channels (one HTTP client shared by webhooks and Slack)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # Receivers are the operator's own endpoints: no redirects followed (a redirect to
            # elsewhere would carry the signed body there), no proxy from the environment.
            self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._http

    async def close(self) -> None:
        """Release the HTTP connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def send(
        self, channel: Mapping[str, Any], secret: str | None, payload: Mapping[str, Any]
    ) -> Outcome:
        """Send one payload to one channel; never raises for a failed delivery."""
        kind = channel["kind"]
        try:
            if kind == "email":
                return await self._email(channel["config"], payload)
            if kind == "webhook":
                return await self._webhook(channel["config"], secret, payload)
            if kind == "slack":
                return await self._slack(channel["config"], payload)
        except Exception as exc:  # any failure of a send is the attempt's error, never a crash
            log.warning("notification to channel %s failed: %s", channel["id"], _describe(exc))
            return Outcome(False, _describe(exc))
        return Outcome(False, f"unknown channel kind {kind!r}", retry=False)

    async def _email(self, config: Mapping[str, Any], payload: Mapping[str, Any]) -> Outcome:
        settings = self.settings
        if not settings.smtp_host:
            return Outcome(False, "e-mail is not configured: set ROOST_SMTP_HOST")
        message = EmailMessage()
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(config["to"])
        message["Subject"] = payload["subject"]
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="roost")
        message.set_content(payload["text"])
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username or None,
                password=settings.smtp_password or None,
                use_tls=settings.smtp_tls == "tls",
                start_tls=True if settings.smtp_tls == "starttls" else False,
                timeout=settings.smtp_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return Outcome(False, _describe(exc), retry=False)
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is the relay's final word; 4xx is "try later".
            return Outcome(False, _describe(exc), retry=not 500 <= exc.code < 600)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome(False, _describe(exc))
        return Outcome(True)

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> Outcome:
        try:
            response = await self._client().post(url, content=body, headers=headers,
                                                  timeout=timeout_s)  # fmt: skip
        except httpx.TimeoutException:
            return Outcome(False, f"no answer within {timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome(False, _describe(exc))
        if 200 <= response.status_code < 300:
            return Outcome(True)
        error = _cut(f"HTTP {response.status_code}: {response.text}")
        retry = response.status_code >= 500 or response.status_code in _RETRYABLE_STATUSES
        return Outcome(False, error, retry=retry)

    async def _webhook(
        self, config: Mapping[str, Any], secret: str | None, payload: Mapping[str, Any]
    ) -> Outcome:
        document = {**payload["json"], "sent_at": int(time.time())}
        body = orjson.dumps(document)
        headers = {
            **config.get("headers", {}),
            "Content-Type": "application/json",
            "User-Agent": f"Roost/{__version__}",
            TIMESTAMP_HEADER: str(document["sent_at"]),
        }
        if secret:
            digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        return await self._post(config["url"], body, headers, float(config["timeout_s"]))

    async def _slack(self, config: Mapping[str, Any], payload: Mapping[str, Any]) -> Outcome:
        body = orjson.dumps({"text": payload["text"]})
        headers = {"Content-Type": "application/json", "User-Agent": f"Roost/{__version__}"}
        return await self._post(config["url"], body, headers, SLACK_TIMEOUT_S)
