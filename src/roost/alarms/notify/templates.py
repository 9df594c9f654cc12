"""Message templates: Jinja2 in a sandbox, compiled when a channel is saved, rendered per message.

A template sees ``status`` (``firing`` when any alert fires, else ``resolved``), ``labels`` (the
group's labels), ``alerts`` (every alert of the message), ``firing`` and ``resolved`` (the alerts
by status), ``channel`` (its name) and ``count``. Each alert has ``alarm_id``, ``type``,
``device_id``, ``site_id``, ``group_ids``, ``severity``, ``status``, ``summary``, ``details``,
``started_at`` and ``ended_at``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from roost.errors import ValidationFailed

#: Longest template accepted (a template is a few lines; this bounds what a save may store).
MAX_TEMPLATE_CHARS = 16_000
#: A rendered subject longer than this is cut (mail clients show less anyway).
MAX_SUBJECT_CHARS = 200

DEFAULT_SUBJECT = (
    "[{{ status | upper }}{% if firing %}:{{ firing | length }}{% endif %}] "
    "{{ labels.get('type') or 'alarms' }}"
    "{% if labels.get('site_id') %} at site {{ labels.site_id }}{% endif %}"
)
DEFAULT_BODY = """\
{% if firing %}Firing ({{ firing | length }}):
{% for a in firing -%}
- {{ a.device_id }}: {{ a.summary }} [{{ a.severity }}, since {{ a.started_at }}]
{% endfor %}{% endif %}{% if resolved %}Resolved ({{ resolved | length }}):
{% for a in resolved %}- {{ a.device_id }}: {{ a.summary }} [ended {{ a.ended_at }}]
{% endfor %}{% endif %}
-- Roost, channel {{ channel }}
"""
DEFAULT_SLACK_TEXT = "*" + DEFAULT_SUBJECT + "*\n" + DEFAULT_BODY

_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)


def check_template(field: str, source: str) -> None:
    """Refuse (422) a template that does not compile, naming the field and the line."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise ValidationFailed(
            f"{field} is longer than {MAX_TEMPLATE_CHARS} characters",
            [{"field": field, "message": "too long"}],
        )
    try:
        _env.parse(source)
    except TemplateSyntaxError as exc:
        raise ValidationFailed(
            f"{field} does not compile: line {exc.lineno}: {exc.message}",
            [{"field": field, "line": exc.lineno, "message": exc.message or "syntax error"}],
        ) from None


def context(
    channel: str, labels: Mapping[str, Any], alerts: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What templates see for one message."""
    firing = [a for a in alerts if a["status"] == "firing"]
    resolved = [a for a in alerts if a["status"] != "firing"]
    return {
        "status": "firing" if firing else "resolved",
        "labels": dict(labels),
        "alerts": list(alerts),
        "firing": firing,
        "resolved": resolved,
        "channel": channel,
        "count": len(alerts),
    }


def render(source: str, values: Mapping[str, Any]) -> str:
    """Render a template; a template that fails at run time answers its error as the text, so
    the message still goes out and the operator sees what to fix."""
    try:
        return _env.from_string(source).render(values)
    except TemplateError as exc:
        return f"(template error: {exc})"


def subject_line(text: str) -> str:
    """A rendered subject as one line of bounded length."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUBJECT_CHARS else line[: MAX_SUBJECT_CHARS - 1] + "…"
