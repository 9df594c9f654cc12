"""Subject grammar shared by every bus backend: validation, wildcard matching, stream families.

Subjects are dot-separated tokens (``roost.telemetry.default``). A subscription pattern may use
NATS wildcards: ``*`` stands for exactly one token, ``>`` (only as the last token) for one or more.
Every subject Roost uses begins with the token ``roost``; on NATS the bus puts the
installation's prefix (``ROOST_BUS_PREFIX``) in its place (:func:`with_prefix`), so two
installations on one NATS account have disjoint subjects and streams. Durable streams are grouped
by *family*, the first two tokens: every subject under
``roost.ingest.`` lives in the stream ``ROOST_INGEST``, whose subjects are ``roost.ingest.>``.
The in-process backend applies the same rules as NATS so that code tested on ``memory://``
behaves the same on ``nats://``.
"""

from __future__ import annotations

import re

# NATS refuses whitespace in subjects; dots separate tokens; '*' and '>' are wildcards.
_BAD_TOKEN = re.compile(r"\s")
# A family token becomes part of a JetStream stream name (no dots, wildcards or spaces there);
# lower case only, so that two spellings can never map to one stream name.
_FAMILY_TOKEN = re.compile(r"[a-z0-9_-]+")
# Durable names follow the NATS rules (they become JetStream consumer names there).
_DURABLE_NAME = re.compile(r"[A-Za-z0-9_-]+")
#: The first token of every subject Roost's rooms use, and the default installation prefix.
DEFAULT_PREFIX = "roost"
# Tokens of a subject that names a stream family: ``roost.<family>.<at least one more>``.
_STREAM_SUBJECT_MIN_TOKENS = 3


def _tokens(subject: str) -> list[str]:
    if not isinstance(subject, str) or not subject:
        raise ValueError(f"invalid subject {subject!r}: empty")
    tokens = subject.split(".")
    for token in tokens:
        if not token or _BAD_TOKEN.search(token):
            raise ValueError(f"invalid subject {subject!r}: empty token or whitespace")
    return tokens


def check_subject(subject: str) -> None:
    """Raise ValueError unless ``subject`` is a literal subject one can publish to."""
    for token in _tokens(subject):
        if "*" in token or ">" in token:
            raise ValueError(f"invalid subject {subject!r}: wildcards only in subscriptions")


def check_pattern(pattern: str) -> None:
    """Raise ValueError unless ``pattern`` is a valid subscription subject (wildcards allowed)."""
    tokens = _tokens(pattern)
    for i, token in enumerate(tokens):
        if token == ">" and i != len(tokens) - 1:
            raise ValueError(f"invalid subject {pattern!r}: '>' must be the last token")
        if token not in {"*", ">"} and ("*" in token or ">" in token):
            raise ValueError(f"invalid subject {pattern!r}: a wildcard must be a whole token")


def is_literal(pattern: str) -> bool:
    """True when ``pattern`` has no wildcard token."""
    return not any(token in {"*", ">"} for token in pattern.split("."))


def subject_matches(pattern: str, subject: str) -> bool:
    """True when the literal ``subject`` matches the subscription ``pattern``."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for i, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > i
        if i >= len(subject_tokens):
            return False
        if token != "*" and token != subject_tokens[i]:
            return False
    return len(pattern_tokens) == len(subject_tokens)


def patterns_overlap(a: str, b: str) -> bool:
    """True when some literal subject matches both patterns."""
    a_tokens = a.split(".")
    b_tokens = b.split(".")
    for i in range(max(len(a_tokens), len(b_tokens))):
        x = a_tokens[i] if i < len(a_tokens) else None
        y = b_tokens[i] if i < len(b_tokens) else None
        if x == ">" or y == ">":
            # The other one still needs at least one token here, which it has unless it ended.
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True


def stream_family(subject: str) -> str:
    """The family prefix (``roost.ingest``) of a stream subject or consumer pattern.

    Raises ValueError when the subject has fewer than three tokens or its first two tokens are
    not plain lower-case names.
    """
    tokens = _tokens(subject)
    if len(tokens) < _STREAM_SUBJECT_MIN_TOKENS or not all(
        _FAMILY_TOKEN.fullmatch(token) for token in tokens[:2]
    ):
        raise ValueError(
            f"invalid stream subject {subject!r}: expected <prefix>.<family>.<more>, "
            "with lower-case letters, digits, '_' or '-' in the first two tokens"
        )
    return f"{tokens[0]}.{tokens[1]}"


def stream_name(family: str) -> str:
    """The stream's name for a family: ``roost.ingest`` → ``ROOST_INGEST``."""
    return family.replace(".", "_").upper()


def check_consumer(subject: str, durable: str, batch: int, max_wait_s: float) -> str:
    """Validate the arguments of ``Bus.stream_consume``; return the stream family."""
    check_pattern(subject)
    family = stream_family(subject)
    if not _DURABLE_NAME.fullmatch(durable):
        raise ValueError(f"invalid durable name {durable!r}: use letters, digits, '_' or '-'")
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    if max_wait_s < 0:
        raise ValueError(f"max_wait_s must not be negative, not {max_wait_s}")
    return family


def check_prefix(prefix: str) -> str:
    """Answer ``prefix`` when it can stand for ``roost`` in subjects and stream names (one
    token of lower-case letters, digits, '_' or '-'); raise ValueError otherwise."""
    if not isinstance(prefix, str) or not _FAMILY_TOKEN.fullmatch(prefix):
        raise ValueError(
            f"invalid bus prefix {prefix!r}: use one token of lower-case letters, digits, "
            "'_' or '-' (it starts every subject and JetStream stream name)"
        )
    return prefix


def with_prefix(subject: str, prefix: str) -> str:
    """The subject as sent on the wire: a leading ``roost`` token becomes ``prefix``."""
    if prefix == DEFAULT_PREFIX or not subject.startswith("roost."):
        return subject
    return prefix + subject[5:]


def without_prefix(subject: str, prefix: str) -> str:
    """The subject as Roost's rooms know it: a leading ``prefix`` token becomes ``roost``."""
    if prefix == DEFAULT_PREFIX or not subject.startswith(prefix + "."):
        return subject
    return "roost" + subject[len(prefix) :]
