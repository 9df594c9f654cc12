"""Credentials are rewritten out of log records, whoever logs them."""

from __future__ import annotations

import logging

import pytest

from roost.core.redaction import REDACTED, RedactSecrets, redact

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZXYtMSJ9.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (f"< GET /api/v1/ws/ingest?token={JWT} HTTP/1.1", JWT),
        (
            '1.2.3.4:5 - "WebSocket /api/v1/ws/stream?kind=t&token=opaque-123" [accepted]',
            "opaque-123",
        ),
        ("< authorization: Bearer opaque-secret-value", "opaque-secret-value"),
        ("< Authorization: SharedAccessSignature sr=a%2Fb&sig=abc%3D&se=99", "abc%3D"),
        ("password=hunter2 tried", "hunter2"),
        ("key roost_0123456789abcdef_secretpart", "secretpart"),
        (f"a bare token {JWT} in a message", JWT),
    ],
)
def test_secrets_are_redacted(line: str, secret: str) -> None:
    cleaned = redact(line)
    assert secret not in cleaned
    assert REDACTED in cleaned


def test_ordinary_lines_are_left_alone() -> None:
    line = "< sec-websocket-key: 1P6R06M3r6UVJ5KAOd5qYQ== and device dev-1 connected"
    assert redact(line) == line


def test_the_filter_keeps_the_records_shape() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s" %d',
        ("1.2.3.4:5", "GET", f"/x?token={JWT}", 200), None,
    )  # fmt: skip
    assert RedactSecrets().filter(record)
    assert isinstance(record.args, tuple) and len(record.args) == 4
    assert JWT not in record.getMessage() and record.args[3] == 200


def test_a_secret_inside_an_objects_repr_is_redacted_too() -> None:
    class Holder:
        def __repr__(self) -> str:
            return f"Holder(token={JWT})"

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "got %r", (Holder(),), None)
    assert RedactSecrets().filter(record)
    assert JWT not in record.getMessage()
