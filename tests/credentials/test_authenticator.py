"""Device tokens and the DeviceAuthenticator, in-process on a real SQLite database.

Each test builds a Roost on a fresh data directory (as ``roost serve`` does) with a clock the
test can move, so expiry is tested without sleeping. "Two processes" are two Roosts on the same
SQLite file joined by one bus: the same in-process bus, or NATS when it is reachable.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from roost.bus.base import Bus
from roost.bus.memory import MemoryBus
from roost.config import load_settings
from roost.core.access import Actor, Role, local_admin
from roost.credentials.authenticator import REVOCATION_SUBJECT
from roost.credentials.tokens.signing import (
    DEVICE_AUDIENCE,
    InvalidDeviceToken,
    verify_device_token,
)
from roost.errors import (
    AuthenticationFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from roost.identity.tokens import ALGORITHM, ISSUER, issue_user_token
from roost.inventory.tables import devices
from roost.runtime import Roost
from tests.support import NATS_URL, skip_or_fail

SECRET = "device-token-test-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-of-the-same-length-0123456"
ADMIN = local_admin()
# Long enough for any bus to deliver a notification on a loaded machine; the tests await the
# event itself and only time out when something is broken.
DELIVERY_TIMEOUT_S = 10.0


class Clock:
    """The wall clock, moved forward on demand."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift

    def advance(self, **delta: float) -> None:
        self.shift += timedelta(**delta)


def build(
    data_dir: Path, clock: Clock, bus: Bus | None = None, bus_url: str = "memory://"
) -> Roost:
    settings = load_settings(
        {"ROOST_CONFIG": str(data_dir / "absent.toml")},
        data_dir=data_dir,
        secret_key=SECRET,
        bus_url=bus_url,
    )
    return Roost.build(settings, clock=clock, bus=bus)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def roost(tmp_path: Path, clock: Clock) -> AsyncIterator[Roost]:
    """A started Roost on a fresh SQLite data directory."""
    instance = build(tmp_path, clock)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def new_device(roost: Roost, device_id: str = "dev-1", actor: Actor = ADMIN) -> int:
    """Register a device; answer its pk."""
    await roost.devices.create(actor, {"id": device_id})
    async with roost.db.read() as conn:
        pk = (
            await conn.execute(
                sa.select(devices.c.pk).where(
                    devices.c.tenant_id == actor.tenant_id, devices.c.id == device_id
                )
            )
        ).scalar_one()
    return int(pk)


async def new_token(
    roost: Roost, device_id: str = "dev-1", expires_at: datetime | None = None
) -> tuple[str, str]:
    """Issue a token; answer (token id, token)."""
    row, token = await roost.credentials.issue_token(ADMIN, device_id, "test", expires_at)
    return str(row["id"]), token


def claims_of(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = jwt.decode(
        token, SECRET, algorithms=[ALGORITHM], audience=DEVICE_AUDIENCE, issuer=ISSUER
    )
    return payload


def resign(token: str, key: str = SECRET, **changes: Any) -> str:
    """The token's claims changed (None drops a claim), signed with ``key``."""
    claims = {**claims_of(token), **changes}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=ALGORITHM)


class Revocations:
    """Collects what on_revoked reports, and lets a test await a given id."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._arrived = asyncio.Event()

    def __call__(self, credential_id: str) -> None:
        self.ids.append(credential_id)
        self._arrived.set()

    async def wait_for(self, credential_id: str) -> None:
        async def arrived() -> None:
            while credential_id not in self.ids:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(arrived(), DELIVERY_TIMEOUT_S)


# -- issuing ------------------------------------------------------------------------------------


async def test_a_token_names_its_device_tenant_and_row(roost: Roost) -> None:
    pk = await new_device(roost)
    expires = roost.clock() + timedelta(days=30, microseconds=654_321)
    row, token = await roost.credentials.issue_token(ADMIN, "dev-1", "field unit", expires)
    claims = claims_of(token)
    assert claims["sub"] == "dev-1" and claims["tid"] == "default"
    assert claims["jti"] == row["id"] and len(row["id"]) <= 32
    assert claims["iss"] == "roost" and claims["aud"] == "roost:device"
    # The stored expiry is the token's, to the second.
    assert row["expires_at"] == expires.replace(microsecond=0)
    assert claims["exp"] == int(row["expires_at"].timestamp())
    assert abs(claims["iat"] - row["created_at"].timestamp()) < 1

    identity = await roost.device_auth.authenticate_token(token)
    assert (identity.tenant_id, identity.device_id, identity.device_pk) == ("default", "dev-1", pk)
    assert identity.credential_id == row["id"]
    assert identity.expires_at == row["expires_at"]
    # The cached answer is the same identity.
    assert await roost.device_auth.authenticate_token(token) == identity


async def test_a_token_without_expiry_has_no_exp_claim(roost: Roost) -> None:
    await new_device(roost)
    _, token = await new_token(roost)
    assert "exp" not in claims_of(token)
    assert (await roost.device_auth.authenticate_token(token)).expires_at is None


async def test_every_token_is_distinct_and_nothing_stored_recreates_it(roost: Roost) -> None:
    await new_device(roost)
    tokens = {(await new_token(roost))[1] for _ in range(5)}
    assert len(tokens) == 5
    async with roost.db.read() as conn:
        dump = repr((await conn.execute(sa.text("SELECT * FROM device_tokens"))).all())
        dump += repr((await conn.execute(sa.text("SELECT * FROM audit_log"))).all())
    for token in tokens:
        assert token not in dump and token.split(".")[2] not in dump


@pytest.mark.parametrize(
    ("when", "fault"),
    [
        (lambda now: now - timedelta(seconds=1), "in the future"),
        # Later than now, but truncated to the second it is not.
        (lambda now: now.replace(microsecond=999_999), "in the future"),
        (lambda now: (now + timedelta(days=1)).replace(tzinfo=None), "UTC offset"),
    ],
)
async def test_expiry_must_be_a_future_aware_time(
    roost: Roost, when: Callable[[datetime], datetime], fault: str
) -> None:
    await new_device(roost)
    with pytest.raises(InvalidInput, match=fault):
        await roost.credentials.issue_token(ADMIN, "dev-1", "", when(roost.clock()))


async def test_issuing_needs_an_operator_of_the_device_tenant(roost: Roost) -> None:
    await new_device(roost)
    viewer = Actor(tenant_id="default", name="v", role=Role.VIEWER)
    with pytest.raises(PermissionDenied):
        await roost.credentials.issue_token(viewer, "dev-1")
    assert (await roost.credentials.list_tokens(viewer, "dev-1", _page())).total == 0
    stranger = Actor(tenant_id="elsewhere", name="o", role=Role.OPERATOR)
    with pytest.raises(NotFound):
        await roost.credentials.issue_token(stranger, "dev-1")
    with pytest.raises(NotFound):
        await roost.credentials.issue_token(ADMIN, "no-such-device")


def _page() -> Any:
    from roost.store.queries import PageRequest

    return PageRequest()


# -- refusals -----------------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


INVALID: dict[str, Callable[[str], str]] = {
    "forged signature": lambda t: resign(t, OTHER_SECRET),
    "tampered payload": lambda t: ".".join(
        [t.split(".")[0], _b64({**claims_of(t), "sub": "dev-2"}), t.split(".")[2]]
    ),
    "alg none": lambda t: f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{t.split('.')[1]}.",
    "another audience": lambda t: resign(t, aud="roost:user"),
    "another issuer": lambda t: resign(t, iss="someone-else"),
    "no generation": lambda t: resign(t, dgn=None),
    "no tenant": lambda t: resign(t, tid=None),
    "ill-typed generation": lambda t: resign(t, dgn="1"),
    "expired": lambda t: resign(t, exp=int(datetime.now(UTC).timestamp()) - 1),
}
MALFORMED = [
    "",
    "garbage",
    "a.b",
    "a.b.c",
    "é.é.é",
    "eyJhbGciOiJIUzI1NiJ9.not-base64!.sig",
    "x" * 3000 + "..",
]


@pytest.mark.parametrize("name", sorted(INVALID))
async def test_a_well_formed_but_invalid_token_is_refused_with_403(roost: Roost, name: str) -> None:
    await new_device(roost)
    _, token = await new_token(roost)
    with pytest.raises(InvalidDeviceToken) as info:
        await roost.device_auth.authenticate_token(INVALID[name](token))
    assert isinstance(info.value, AuthenticationFailed) and info.value.status == 403


async def test_a_user_token_is_not_a_device_token(roost: Roost) -> None:
    user_token, _ = issue_user_token(SECRET, 1, "default", 600)
    with pytest.raises(InvalidDeviceToken, match="(?i)audience"):
        await roost.device_auth.authenticate_token(user_token)


@pytest.mark.parametrize("text", MALFORMED)
async def test_text_that_is_not_a_jwt_is_refused_with_401(roost: Roost, text: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        await roost.device_auth.authenticate_token(text)
    assert not isinstance(info.value, InvalidDeviceToken) and info.value.status == 401


async def test_the_cache_respects_expiry(roost: Roost, clock: Clock) -> None:
    await new_device(roost)
    _, token = await new_token(roost, expires_at=clock() + timedelta(minutes=2))
    await roost.device_auth.authenticate_token(token)
    await roost.device_auth.authenticate_token(token)  # from the cache
    clock.advance(minutes=1, seconds=59)
    await roost.device_auth.authenticate_token(token)
    clock.advance(seconds=2)
    with pytest.raises(InvalidDeviceToken, match="expired"):
        await roost.device_auth.authenticate_token(token)


def test_verification_uses_the_callers_clock() -> None:
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": DEVICE_AUDIENCE,
            "sub": "d",
            "tid": "t",
            "jti": "j",
            "dgn": 1,
            "iat": 2_000_000_000,  # in the future for the wall clock: not pyjwt's business
            "exp": 2_000_000_060,
        },
        SECRET,
        algorithm=ALGORITHM,
    )
    assert verify_device_token(SECRET, token, 2_000_000_059.9).expires_at == 2_000_000_060
    with pytest.raises(InvalidDeviceToken, match="expired"):
        verify_device_token(SECRET, token, 2_000_000_060)


# -- revocation ---------------------------------------------------------------------------------


async def test_a_revoked_token_is_refused_at_once_and_reported_once(roost: Roost) -> None:
    await new_device(roost)
    token_id, token = await new_token(roost)
    other_id, other = await new_token(roost)
    await roost.device_auth.authenticate_token(token)  # cached now
    seen = Revocations()
    roost.device_auth.on_revoked(seen)
    session_closed = asyncio.Event()
    roost.device_auth.on_revoked_scoped(token_id, session_closed.set)
    untouched = asyncio.Event()
    roost.device_auth.on_revoked_scoped(other_id, untouched.set)

    row = await roost.credentials.revoke_token(ADMIN, "dev-1", token_id)
    assert row["revoked_at"] is not None
    with pytest.raises(PermissionDenied, match="revoked"):
        await roost.device_auth.authenticate_token(token)
    assert seen.ids == [token_id] and session_closed.is_set() and not untouched.is_set()
    assert roost.device_auth.is_revoked(token_id)
    # Again: nothing changes, nobody is told twice (our own bus notice comes back too).
    await roost.credentials.revoke_token(ADMIN, "dev-1", token_id)
    await asyncio.sleep(0)
    assert seen.ids == [token_id]
    assert (await roost.device_auth.authenticate_token(other)).credential_id == other_id
    # A session watching an already revoked token hears of it at once.
    late = asyncio.Event()
    roost.device_auth.on_revoked_scoped(token_id, late.set)
    assert late.is_set()


async def test_revoking_names_a_token_of_that_device(roost: Roost) -> None:
    await new_device(roost)
    await new_device(roost, "dev-2")
    token_id, token = await new_token(roost)
    with pytest.raises(NotFound):
        await roost.credentials.revoke_token(ADMIN, "dev-2", token_id)
    stranger = Actor(tenant_id="elsewhere", name="o", role=Role.OPERATOR)
    with pytest.raises(NotFound):
        await roost.credentials.revoke_token(stranger, "dev-1", token_id)
    await roost.device_auth.authenticate_token(token)


async def test_revocations_survive_a_restart(tmp_path: Path, clock: Clock) -> None:
    first = build(tmp_path, clock)
    await first.start()
    await new_device(first)
    revoked_id, revoked = await new_token(first)
    _, kept = await new_token(first)
    await first.credentials.revoke_token(ADMIN, "dev-1", revoked_id)
    await first.close()

    second = build(tmp_path, clock)
    await second.start()
    try:
        with pytest.raises(PermissionDenied, match="revoked"):
            await second.device_auth.authenticate_token(revoked)
        assert (await second.device_auth.authenticate_token(kept)).device_id == "dev-1"
    finally:
        await second.close()


# -- deleted devices ----------------------------------------------------------------------------


async def test_deleting_the_device_refuses_its_tokens(roost: Roost) -> None:
    await new_device(roost)
    token_id, token = await new_token(roost)
    await roost.device_auth.authenticate_token(token)
    seen = Revocations()
    roost.device_auth.on_revoked(seen)

    await roost.devices.delete(ADMIN, "dev-1")
    with pytest.raises(PermissionDenied, match="deleted"):
        await roost.device_auth.authenticate_token(token)
    assert seen.ids == [token_id]  # the gateways close its sessions

    # The same id registered again is another device: the old token does not open it.
    pk = await new_device(roost)
    with pytest.raises(PermissionDenied, match="deleted"):
        await roost.device_auth.authenticate_token(token)
    _, fresh = await new_token(roost)
    assert (await roost.device_auth.authenticate_token(fresh)).device_pk == pk


async def test_a_deleted_device_is_refused_after_a_restart(tmp_path: Path, clock: Clock) -> None:
    first = build(tmp_path, clock)
    await first.start()
    await new_device(first)
    _, token = await new_token(first)
    await first.devices.delete(ADMIN, "dev-1")
    await new_device(first)  # re-created under the same id
    await first.close()

    second = build(tmp_path, clock)
    await second.start()
    try:
        for _ in range(2):  # the second refusal comes from memory
            with pytest.raises(PermissionDenied, match="deleted"):
                await second.device_auth.authenticate_token(token)
    finally:
        await second.close()


# -- two processes ------------------------------------------------------------------------------


async def _nats_available() -> None:
    try:
        from roost.bus.nats import NatsBus
    except ImportError as exc:
        pytest.skip(f"no NATS backend: {exc}")
    probe = NatsBus(NATS_URL)
    try:
        await asyncio.wait_for(probe.start(), 5)
    except Exception as exc:  # any failure to connect means "not available here"
        skip_or_fail(f"NATS not reachable at {NATS_URL}: {exc}")
    finally:
        await probe.close()


@pytest.fixture(params=["memory", "nats"])
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[tuple[Roost, Roost]]:
    """Two Roosts on one SQLite file, joined by one bus: the in-process bus, or NATS."""
    if request.param == "nats":
        await _nats_available()
        a, b = build(tmp_path, clock, bus_url=NATS_URL), build(tmp_path, clock, bus_url=NATS_URL)
    else:
        shared = MemoryBus()
        a, b = build(tmp_path, clock, bus=shared), build(tmp_path, clock, bus=shared)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await b.close()
        await a.close()


async def test_a_revocation_reaches_the_other_process(pair: tuple[Roost, Roost]) -> None:
    api, gateway = pair
    await new_device(api)
    token_id, token = await new_token(api)
    assert (await gateway.device_auth.authenticate_token(token)).device_id == "dev-1"
    seen = Revocations()
    gateway.device_auth.on_revoked(seen)

    await api.credentials.revoke_token(ADMIN, "dev-1", token_id)
    await seen.wait_for(token_id)
    with pytest.raises(PermissionDenied, match="revoked"):
        await gateway.device_auth.authenticate_token(token)


async def test_a_device_deletion_reaches_the_other_process(pair: tuple[Roost, Roost]) -> None:
    api, gateway = pair
    await new_device(api)
    token_id, token = await new_token(api)
    await gateway.device_auth.authenticate_token(token)
    seen = Revocations()
    gateway.device_auth.on_revoked(seen)

    await api.devices.delete(ADMIN, "dev-1")
    await seen.wait_for(token_id)
    with pytest.raises(PermissionDenied):
        await gateway.device_auth.authenticate_token(token)


async def test_a_late_deletion_notice_spares_the_device_created_since(
    roost: Roost,
) -> None:
    await new_device(roost)
    _, old = await new_token(roost)
    await roost.device_auth.authenticate_token(old)
    await roost.devices.delete(ADMIN, "dev-1")
    await new_device(roost)
    fresh_id, fresh = await new_token(roost)
    await roost.device_auth.authenticate_token(fresh)
    seen = Revocations()
    roost.device_auth.on_revoked(seen)
    # The deletion notice of the first device arrives again, late (as from a slow process),
    # followed by a marker: notices are handled in order, so once the marker is in, so is it.
    late = {"tokens": [], "devices": [{"tenant_id": "default", "device_id": "dev-1"}]}
    marker = {"tokens": [{"id": "marker", "exp": None}], "devices": []}
    for notice in (late, marker):
        await roost.bus.publish(REVOCATION_SUBJECT, json.dumps(notice).encode())
    await seen.wait_for("marker")
    assert seen.ids == ["marker"]
    assert (await roost.device_auth.authenticate_token(fresh)).credential_id == fresh_id


async def test_reconcile_catches_what_the_bus_lost(tmp_path: Path, clock: Clock) -> None:
    # Two processes whose buses are not joined: every notice is lost.
    api, gateway = build(tmp_path, clock), build(tmp_path, clock)
    await api.start()
    await gateway.start()
    try:
        await new_device(api)
        await new_device(api, "dev-2")
        revoked_id, revoked = await new_token(api)
        gone_id, gone = await new_token(api, "dev-2")
        for token in (revoked, gone):
            await gateway.device_auth.authenticate_token(token)
        seen = Revocations()
        gateway.device_auth.on_revoked(seen)
        await api.credentials.revoke_token(ADMIN, "dev-1", revoked_id)
        await api.devices.delete(ADMIN, "dev-2")
        await gateway.device_auth.authenticate_token(revoked)  # not heard of yet

        await gateway.device_auth.reconcile()
        assert sorted(seen.ids) == sorted([revoked_id, gone_id])
        with pytest.raises(PermissionDenied):
            await gateway.device_auth.authenticate_token(revoked)
        with pytest.raises(PermissionDenied):
            await gateway.device_auth.authenticate_token(gone)
    finally:
        await gateway.close()
        await api.close()


async def test_reconcile_notices_a_deleted_tenant(roost: Roost) -> None:
    await roost.identity.create_tenant(ADMIN, "acme", "Acme")
    acme = Actor(tenant_id="acme", name="cli", role=Role.ADMIN, is_superuser=True)
    await new_device(roost, "dev-9", acme)
    row, token = await roost.credentials.issue_token(acme, "dev-9")
    await roost.device_auth.authenticate_token(token)
    seen = Revocations()
    roost.device_auth.on_revoked(seen)

    await roost.identity.delete_tenant(ADMIN, "acme")
    await roost.device_auth.reconcile()
    assert seen.ids == [row["id"]]
    with pytest.raises(PermissionDenied):
        await roost.device_auth.authenticate_token(token)


# -- MQTT ---------------------------------------------------------------------------------------


async def test_mqtt_username_is_the_device_id_or_jwt(roost: Roost) -> None:
    await new_device(roost)
    await new_device(roost, "dev-2")
    _, token = await new_token(roost)
    password = token.encode()
    auth = roost.device_auth
    assert (await auth.authenticate_mqtt("dev-1", password)).device_id == "dev-1"
    assert (await auth.authenticate_mqtt("JWT", password)).device_id == "dev-1"
    with pytest.raises(PermissionDenied, match="dev-2"):
        await auth.authenticate_mqtt("dev-2", password)
    for username, secret in [(None, password), ("", password), ("dev-1", None), ("dev-1", b"")]:
        with pytest.raises(AuthenticationFailed) as info:
            await auth.authenticate_mqtt(username, secret)
        assert info.value.status == 401
    with pytest.raises(AuthenticationFailed, match="UTF-8"):
        await auth.authenticate_mqtt("dev-1", b"\xff\xfe" + password)
    with pytest.raises(InvalidDeviceToken):
        await auth.authenticate_mqtt("JWT", resign(token, OTHER_SECRET).encode())


# -- usage and concurrency ----------------------------------------------------------------------


async def test_last_used_at_is_written_at_most_once_a_minute(roost: Roost, clock: Clock) -> None:
    await new_device(roost)
    _, token = await new_token(roost)

    async def last_used() -> datetime | None:
        await roost.device_auth.flush_usage()
        page = await roost.credentials.list_tokens(ADMIN, "dev-1", _page())
        value: datetime | None = page.items[0]["last_used_at"]
        return value

    assert await last_used() is None
    await roost.device_auth.authenticate_token(token)
    first = await last_used()
    assert first is not None
    clock.advance(seconds=30)
    await roost.device_auth.authenticate_token(token)
    assert await last_used() == first
    clock.advance(seconds=31)
    await roost.device_auth.authenticate_token(token)
    later = await last_used()
    assert later is not None and later - first >= timedelta(seconds=60)


async def test_concurrent_first_sights_all_succeed(roost: Roost) -> None:
    for n in range(5):
        await new_device(roost, f"dev-{n}")
    tokens = [(await new_token(roost, f"dev-{n % 5}"))[1] for n in range(40)]
    fresh = build(roost.settings.data_dir, Clock())
    await fresh.start()
    try:
        identities = await asyncio.gather(
            *(fresh.device_auth.authenticate_token(t) for t in tokens)
        )
    finally:
        await fresh.close()
    assert [i.device_id for i in identities] == [f"dev-{n % 5}" for n in range(40)]


# -- the verifier as a parser -------------------------------------------------------------------

_VALID = jwt.encode(
    {"iss": ISSUER, "aud": DEVICE_AUDIENCE, "sub": "d", "tid": "t", "jti": "j", "dgn": 7, "iat": 1},
    SECRET,
    algorithm=ALGORITHM,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_refused_with_an_authentication_error(text: str) -> None:
    with pytest.raises(AuthenticationFailed):
        verify_device_token(SECRET, text, 0)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(_VALID) - 1),
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.="),
)
def test_any_changed_character_makes_the_token_invalid(position: int, char: str) -> None:
    assume(_VALID[position] != char)
    changed = _VALID[:position] + char + _VALID[position + 1 :]
    with pytest.raises(AuthenticationFailed):
        verify_device_token(SECRET, changed, 0)


def test_the_unchanged_token_verifies() -> None:
    claims = verify_device_token(SECRET, _VALID, 0)
    assert (claims.device_id, claims.tenant_id, claims.token_id) == ("d", "t", "j")
    assert (claims.device_generation, claims.issued_at, claims.expires_at) == (7, 1, None)
