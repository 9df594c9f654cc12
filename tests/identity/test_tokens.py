"""User tokens (signed JWTs) and API key parsing, without a server."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from roost.errors import AuthenticationFailed
from roost.identity import apikeys
from roost.identity.tokens import (
    ALGORITHM,
    ISSUER,
    USER_AUDIENCE,
    issue_user_token,
    new_secret_key,
    verify_user_token,
)

SECRET = "unit-test-secret-key-0123456789abcdef"


def claims(**overrides: object) -> dict[str, object]:
    """Valid claims for user 7 of tenant acme, changed by ``overrides`` (None drops a claim)."""
    now = datetime.now(UTC)
    base: dict[str, object] = {
        "iss": ISSUER,
        "aud": USER_AUDIENCE,
        "sub": "7",
        "tid": "acme",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "sev": 0,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, object], key: str = SECRET) -> str:
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def refused(token: str, key: str = SECRET) -> str:
    """The reason verify_user_token gives when it refuses the token."""
    with pytest.raises(AuthenticationFailed) as info:
        verify_user_token(key, token)
    return info.value.detail


# -- issue and verify -----------------------------------------------------------------------------


def test_issued_token_verifies_to_its_user_tenant_and_expiry() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    token, expires = issue_user_token(SECRET, 42, "acme", 3600, now=datetime.now(UTC))
    got = verify_user_token(SECRET, token)
    assert (got.user_id, got.tenant_id) == (42, "acme")
    assert got.expires_at == expires
    assert timedelta(seconds=3600) <= got.expires_at - got.issued_at <= timedelta(seconds=3601)
    # The expiry answered with the token is the one in it, to the second.
    _, fixed = issue_user_token(SECRET, 42, "acme", 60, now=now)
    assert fixed == now + timedelta(seconds=60)


def test_every_token_is_distinct() -> None:
    now = datetime.now(UTC)
    first, _ = issue_user_token(SECRET, 1, "acme", 60, now=now)
    second, _ = issue_user_token(SECRET, 1, "acme", 60, now=now)
    assert first != second  # a fresh jti each time


@pytest.mark.parametrize("microsecond", [0, 1, 500_000, 999_999])
def test_a_token_lives_at_least_its_ttl(microsecond: int) -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, microsecond, tzinfo=UTC)
    _, expires = issue_user_token(SECRET, 1, "acme", 1, now=now)
    assert timedelta(seconds=1) <= expires - now < timedelta(seconds=2)


def test_new_secret_keys_are_random_and_long() -> None:
    keys = {new_secret_key() for _ in range(10)}
    assert len(keys) == 10
    assert all(len(k) >= 43 for k in keys)  # 32 bytes, URL-safe Base64


# -- refusals -------------------------------------------------------------------------------------


def test_expired_token_is_refused_as_expired() -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    token, _ = issue_user_token(SECRET, 42, "acme", 60, now=past)
    assert refused(token) == "token expired"


def test_token_of_another_key_is_refused() -> None:
    token, _ = issue_user_token(new_secret_key(), 42, "acme", 60)
    assert "signature" in refused(token).lower()


@pytest.mark.parametrize(
    ("overrides", "phrase"),
    [
        ({"aud": "roost:device"}, "audience"),
        ({"aud": None}, "aud"),
        ({"iss": "someone-else"}, "issuer"),
        ({"iss": None}, "iss"),
        ({"tid": None}, "tid"),
        ({"exp": None}, "exp"),
        ({"sub": "not-a-number"}, "subject"),
        ({"sev": None}, "sev"),
        ({"sev": "0"}, "session epoch"),
    ],
    ids=[
        "wrong-audience",
        "no-audience",
        "wrong-issuer",
        "no-issuer",
        "no-tenant",
        "no-expiry",
        "bad-subject",
        "no-session-epoch",
        "text-session-epoch",
    ],
)
def test_token_with_wrong_or_missing_claims_is_refused(
    overrides: dict[str, object], phrase: str
) -> None:
    detail = refused(sign(claims(**overrides)))
    assert detail.startswith("invalid token")
    assert phrase in detail.lower()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_tampered_payload_is_refused() -> None:
    token = sign(claims())
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["sub"] = "1"  # become user 1, keeping the old signature
    forged = f"{header}.{_b64(json.dumps(body).encode())}.{signature}"
    assert "signature" in refused(forged).lower()


def test_unsigned_token_is_refused() -> None:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims()).encode())
    assert refused(f"{header}.{payload}.").startswith("invalid token")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "roost_x_y", "Bearer x"])
def test_garbage_is_refused(garbage: str) -> None:
    assert refused(garbage).startswith("invalid token")


# -- API keys -------------------------------------------------------------------------------------


def test_new_api_key_splits_back_and_verifies_only_its_secret() -> None:
    key = apikeys.new_api_key(SECRET)
    assert key.plaintext.startswith("roost_")
    assert apikeys.looks_like_api_key(key.plaintext)
    parts = apikeys.split_api_key(key.plaintext)
    assert parts is not None
    key_id, secret = parts
    assert key_id == key.key_id
    assert secret not in key.secret_hash and key.plaintext not in key.secret_hash
    assert apikeys.verify_api_key_secret(SECRET, secret, key.secret_hash)
    assert not apikeys.verify_api_key_secret(SECRET, secret + "x", key.secret_hash)
    assert not apikeys.verify_api_key_secret("another pepper", secret, key.secret_hash)


def test_secrets_may_contain_underscores() -> None:
    # token_urlsafe uses '_', so only the first '_' after the prefix separates id from secret.
    assert apikeys.split_api_key("roost_abc123_se_cr_et") == ("abc123", "se_cr_et")


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "roost_",
        "roost_abc",
        "roost_abc_",
        "roost__secret",
        "ROOST_abc_secret",
        "rooster_abc_secret",
        "abc_secret",
        "roost_abc_" + "s" * 200,
    ],
)
def test_malformed_api_keys_do_not_split(malformed: str) -> None:
    assert apikeys.split_api_key(malformed) is None


def test_jwts_do_not_look_like_api_keys() -> None:
    token, _ = issue_user_token(SECRET, 1, "acme", 60)
    assert not apikeys.looks_like_api_key(token)
