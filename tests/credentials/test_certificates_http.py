"""Device certificates through the running server: the public CA, issuing from a CSR or with a
generated key pair, listing, revoking, rotating, roles and tenancy; and HTTP ingest with a client
certificate forwarded by a trusted TLS proxy (``ROOST_CLIENT_CERT_HEADER``)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from roost.config import load_settings
from roost.core.device_identity import ClientCertificate, DeviceIdentity
from roost.credentials.certificates.ca import (
    CertificateAuthority,
    DeviceName,
    parse_device_uri,
    private_key_pem,
)
from roost.errors import RoostError
from roost.runtime import Roost
from tests.conftest import Tenant
from tests.support import (
    SECRET_KEY,
    Api,
    RoostServer,
    admin_client,
    assert_problem,
    eventually,
    free_port,
    unique,
)

CERT_HEADER = "X-Client-Cert"


def certs_path(device_id: str, cert_id: str | None = None) -> str:
    path = f"/api/v1/devices/{device_id}/certificates"
    return f"{path}/{cert_id}" if cert_id else path


def new_device(api: Api) -> str:
    device_id = unique("dev")
    resp = api.post("/api/v1/devices", json={"id": device_id})
    assert resp.status_code == 201, resp.text
    return device_id


def make_csr(key: ec.EllipticCurvePrivateKey, cn: str = "whatever-the-device-says") -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def issue(api: Api, device_id: str, **body: Any) -> dict[str, Any]:
    resp = api.post(certs_path(device_id), json=body)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def listed(api: Api, device_id: str) -> dict[str, dict[str, Any]]:
    resp = api.get(certs_path(device_id))
    assert resp.status_code == 200, resp.text
    return {item["id"]: item for item in resp.json()["items"]}


def ca_certificate(api: Api) -> x509.Certificate:
    resp = httpx.get(f"{api.base_url}/api/v1/ca")  # public: no credential
    assert resp.status_code == 200, resp.text
    return x509.load_pem_x509_certificate(resp.json()["certificate"].encode())


# -- issuing ---------------------------------------------------------------------------------------


def test_the_ca_is_public_and_stable(tenant: Tenant) -> None:
    first = ca_certificate(tenant.anonymous)
    assert first.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca_certificate(tenant.anonymous) == first


def test_an_operator_issues_from_a_csr_whose_key_is_used(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    key = ec.generate_private_key(ec.SECP256R1())
    created = issue(tenant.operator, device_id, csr=make_csr(key), days=30)
    assert created["id"].startswith("crt_") and created["device_id"] == device_id
    assert "private_key" not in created and created["key_generated"] is False
    cert = x509.load_pem_x509_certificate(created["certificate"].encode())
    assert cert.public_key() == key.public_key()
    cert.verify_directly_issued_by(ca_certificate(tenant.anonymous))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device_id
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    [name] = [parse_device_uri(u) for u in sans.get_values_for_type(x509.UniformResourceIdentifier)]
    assert name is not None and (name.tenant_id, name.device_id) == (tenant.id, device_id)
    assert format(cert.serial_number, "x") == created["serial"]
    assert cert.fingerprint(hashes.SHA256()).hex() == created["fingerprint"]
    not_after = datetime.fromisoformat(created["not_after"].replace("Z", "+00:00"))
    assert not_after == cert.not_valid_after_utc
    assert timedelta(days=29) < not_after - datetime.now(UTC) <= timedelta(days=30)
    item = listed(tenant.viewer, device_id)[created["id"]]
    assert item["certificate"] == created["certificate"] and item["revoked_at"] is None
    resp = tenant.viewer.get(certs_path(device_id, created["id"]))
    assert resp.status_code == 200 and resp.json()["fingerprint"] == created["fingerprint"]
    resp = tenant.operator.get(
        "/api/v1/audit", params={"entity_type": "device_certificate", "entity_id": created["id"]}
    )
    assert [e["action"] for e in resp.json()["items"]] == ["create"]


def test_without_a_csr_the_key_pair_is_generated_and_shown_once(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    created = issue(tenant.operator, device_id)
    key = serialization.load_pem_private_key(created["private_key"].encode(), password=None)
    cert = x509.load_pem_x509_certificate(created["certificate"].encode())
    assert cert.public_key() == key.public_key() and created["key_generated"] is True
    default_life = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=364) < default_life <= timedelta(days=365)
    assert "private_key" not in listed(tenant.operator, device_id)[created["id"]]
    audit = tenant.operator.get("/api/v1/audit", params={"device_id": device_id}).text
    assert "PRIVATE KEY" not in audit


@pytest.mark.parametrize(
    "body",
    [
        {"csr": "not a csr"},
        {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"},
        {"days": 0},
        {"days": 100_000},
        {"csr": None, "unknown": 1},
    ],
    ids=["text", "bad-der", "days-0", "days-huge", "unknown-field"],
)
def test_bad_requests_are_422(tenant: Tenant, body: dict[str, Any]) -> None:
    device_id = new_device(tenant.operator)
    assert_problem(tenant.operator.post(certs_path(device_id), json=body), 422)
    assert listed(tenant.operator, device_id) == {}


def test_a_csr_with_a_bad_signature_is_422(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    csr = x509.load_pem_x509_csr(make_csr(ec.generate_private_key(ec.SECP256R1())).encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    assert_problem(tenant.operator.post(certs_path(device_id), json={"csr": forged}), 422, "sign")
    assert listed(tenant.operator, device_id) == {}


def test_a_viewer_may_list_but_not_issue_revoke_or_rotate(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    cert_id = issue(tenant.operator, device_id)["id"]
    assert_problem(tenant.viewer.post(certs_path(device_id), json={}), 403)
    assert_problem(tenant.viewer.delete(certs_path(device_id, cert_id)), 403)
    assert_problem(tenant.viewer.post(certs_path(device_id, cert_id) + "/rotate", json={}), 403)
    assert list(listed(tenant.viewer, device_id)) == [cert_id]
    assert_problem(tenant.anonymous.post(certs_path(device_id), json={}), 401)


def test_another_tenants_device_and_certificates_do_not_exist(tenant: Tenant, admin: Api) -> None:
    device_id = new_device(tenant.operator)
    cert_id = issue(tenant.operator, device_id)["id"]
    assert_problem(admin.post(certs_path(device_id), json={}), 404)
    assert_problem(admin.get(certs_path(device_id)), 404)
    assert_problem(admin.get(certs_path(device_id, cert_id)), 404)
    assert_problem(admin.delete(certs_path(device_id, cert_id)), 404)
    other = new_device(tenant.operator)
    assert_problem(tenant.operator.delete(certs_path(other, cert_id)), 404)
    assert listed(tenant.viewer, device_id)[cert_id]["revoked_at"] is None


# -- revoking and rotating -------------------------------------------------------------------------


def test_revoking_is_recorded_and_repeatable(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    revoked, kept = issue(tenant.operator, device_id), issue(tenant.operator, device_id)
    resp = tenant.operator.delete(certs_path(device_id, revoked["id"]))
    assert resp.status_code == 204, resp.text
    states = {cid: item["revoked_at"] for cid, item in listed(tenant.viewer, device_id).items()}
    assert states[revoked["id"]] is not None and states[kept["id"]] is None
    assert tenant.operator.delete(certs_path(device_id, revoked["id"])).status_code == 204
    resp = tenant.operator.get(
        "/api/v1/audit", params={"entity_type": "device_certificate", "entity_id": revoked["id"]}
    )
    assert sorted(e["action"] for e in resp.json()["items"]) == ["create", "revoke"]


def test_rotating_issues_a_new_certificate_and_revokes_the_old(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    old = issue(tenant.operator, device_id)
    key = ec.generate_private_key(ec.SECP256R1())
    resp = tenant.operator.post(
        certs_path(device_id, old["id"]) + "/rotate", json={"csr": make_csr(key)}
    )
    assert resp.status_code == 201, resp.text
    new = resp.json()
    assert new["id"] != old["id"] and "private_key" not in new
    assert x509.load_pem_x509_certificate(new["certificate"].encode()).public_key() == (
        key.public_key()
    )
    items = listed(tenant.viewer, device_id)
    assert items[old["id"]]["revoked_at"] is not None and items[new["id"]]["revoked_at"] is None
    again = tenant.operator.post(certs_path(device_id, old["id"]) + "/rotate", json={})
    assert_problem(again, 409, "revoked")


async def _another_process(
    server: RoostServer, data_dir: Any, certificates: list[str]
) -> tuple[str, list[DeviceIdentity | RoostError]]:
    """Another Roost process on the server's database, with a data dir of its own: its CA, and
    what its authenticator makes of each certificate (PEM)."""
    settings = load_settings(
        {},
        data_dir=data_dir,
        database_url=server.database_url or f"sqlite:///{server.data_dir / 'roost.db'}",
        secret_key=SECRET_KEY,
    )
    roost = Roost.build(settings)
    await roost.start(serve=False)
    results: list[DeviceIdentity | RoostError] = []
    try:
        for pem in certificates:
            der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(
                serialization.Encoding.DER
            )
            try:
                results.append(await roost.device_auth.authenticate(ClientCertificate(der)))
            except RoostError as exc:
                results.append(exc)
        return await roost.certificates.ca_pem(), results
    finally:
        await roost.close()


def test_every_process_shares_the_ca_and_knows_the_revocations(
    server: RoostServer, tenant: Tenant, tmp_path: Any
) -> None:
    # The CA lives in the database (key sealed), not in one process's data dir.
    device_id = new_device(tenant.operator)
    good, revoked = issue(tenant.operator, device_id), issue(tenant.operator, device_id)
    assert tenant.operator.delete(certs_path(device_id, revoked["id"])).status_code == 204
    ca_pem, (identity, refusal) = asyncio.run(
        _another_process(server, tmp_path, [good["certificate"], revoked["certificate"]])
    )
    assert x509.load_pem_x509_certificate(ca_pem.encode()) == ca_certificate(tenant.anonymous)
    assert isinstance(identity, DeviceIdentity)
    assert (identity.tenant_id, identity.device_id, identity.credential_id) == (
        tenant.id,
        device_id,
        good["id"],
    )
    assert isinstance(refusal, RoostError) and refusal.status == 403


def test_an_operators_ca_is_used_when_configured(tmp_path: Any) -> None:
    authority = CertificateAuthority.generate(datetime.now(UTC), common_name="Operator CA")
    cert_file, key_file = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert_file.write_text(authority.pem)
    key_file.write_text(private_key_pem(authority.key))  # type: ignore[arg-type]
    server = RoostServer(
        tmp_path / "data",
        env_overrides={"ROOST_CA_CERT_FILE": str(cert_file), "ROOST_CA_KEY_FILE": str(key_file)},
    ).start()
    try:
        with admin_client(server) as api:
            assert ca_certificate(api) == authority.certificate
            device_id = new_device(api)
            cert = x509.load_pem_x509_certificate(issue(api, device_id)["certificate"].encode())
            assert authority.signed(cert)
    finally:
        server.stop()
    assert not server.unhandled_errors()


def test_certificate_routes_are_documented(server: RoostServer) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/api/v1/ca" in paths
    assert {"get", "post"} <= set(paths["/api/v1/devices/{device_id}/certificates"])
    assert {"get", "delete"} <= set(paths["/api/v1/devices/{device_id}/certificates/{cert_id}"])
    assert "post" in paths["/api/v1/devices/{device_id}/certificates/{cert_id}/rotate"]


# -- HTTP ingest with a certificate forwarded by a trusted proxy -----------------------------------


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost that trusts a TLS proxy's ``X-Client-Cert`` header, and listens for HTTPS."""
    server = RoostServer(
        tmp_path_factory.mktemp("roost-proxied"),
        env_overrides={
            "ROOST_CLIENT_CERT_HEADER": CERT_HEADER,
            "ROOST_HTTPS_PORT": str(free_port()),
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.unhandled_errors()


@pytest.fixture(scope="module")
def proxied_admin(proxied: RoostServer) -> Iterator[Api]:
    with admin_client(proxied) as api:
        yield api


def post_with_cert(server: RoostServer, pem: str | None, body: Any) -> httpx.Response:
    # What nginx sends for $ssl_client_escaped_cert: the PEM, URL-encoded.
    headers = {} if pem is None else {CERT_HEADER: quote(pem, safe="")}
    return httpx.post(f"{server.url}/api/v1/telemetry", json=body, headers=headers)


def temperatures(api: Api, device_id: str) -> list[Any]:
    resp = api.get(f"/api/v1/devices/{device_id}/telemetry", params={"sensor": "temperature"})
    if resp.status_code == 404 and "no sensor" in resp.text:
        return []  # nothing was ever stored for it
    assert resp.status_code == 200, resp.text
    return sorted(item["value"] for item in resp.json()["items"])


def test_a_forwarded_certificate_authenticates_its_device(
    proxied: RoostServer, proxied_admin: Api
) -> None:
    device_id = new_device(proxied_admin)
    created = issue(proxied_admin, device_id)
    resp = post_with_cert(proxied, created["certificate"], {"temperature": 21.5})
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 1
    assert temperatures(proxied_admin, device_id) == [21.5]
    # Revoked: refused at once, nothing stored.
    assert proxied_admin.delete(certs_path(device_id, created["id"])).status_code == 204
    resp = post_with_cert(proxied, created["certificate"], {"temperature": 99.0})
    assert_problem(resp, 403, "revoked")
    assert temperatures(proxied_admin, device_id) == [21.5]


def test_forged_and_foreign_forwarded_certificates_are_refused(
    proxied: RoostServer, proxied_admin: Api
) -> None:
    device_id = new_device(proxied_admin)
    genuine = issue(proxied_admin, device_id)
    # Another CA that signs a perfect look-alike: same subject, same URI SAN.
    cert = x509.load_pem_x509_certificate(genuine["certificate"].encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    [uri] = sans.get_values_for_type(x509.UniformResourceIdentifier)
    name = parse_device_uri(uri)
    assert isinstance(name, DeviceName)
    other_ca = CertificateAuthority.generate(datetime.now(UTC))
    lookalike = other_ca.issue_device_certificate(
        ec.generate_private_key(ec.SECP256R1()).public_key(), name, datetime.now(UTC)
    )
    assert_problem(post_with_cert(proxied, lookalike.pem, {"temperature": 1}), 403, "CA")
    # The genuine certificate with one byte of its signature changed.
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01
    forged = x509.load_der_x509_certificate(bytes(der)).public_bytes(serialization.Encoding.PEM)
    assert_problem(post_with_cert(proxied, forged.decode(), {"temperature": 2}), 403)
    assert_problem(post_with_cert(proxied, "garbage", {"temperature": 3}), 401, "malformed")
    assert_problem(post_with_cert(proxied, None, {"temperature": 4}), 401)
    assert temperatures(proxied_admin, device_id) == []


def test_a_deleted_devices_certificate_is_refused(proxied: RoostServer, proxied_admin: Api) -> None:
    device_id = new_device(proxied_admin)
    pem = issue(proxied_admin, device_id)["certificate"]
    assert post_with_cert(proxied, pem, {"temperature": 1}).status_code == 200
    assert proxied_admin.delete(f"/api/v1/devices/{device_id}").status_code == 204
    # Re-created under the same id: another device, which the old certificate does not open.
    assert proxied_admin.post("/api/v1/devices", json={"id": device_id}).status_code == 201
    eventually(lambda: post_with_cert(proxied, pem, {"temperature": 2}).status_code in (401, 403))
    assert temperatures(proxied_admin, device_id) == []


# -- the direct HTTPS listener (ROOST_HTTPS_PORT) ------------------------------------------------


def https_client(
    server: RoostServer, tmp_path: Any, pem: str | None, key: str | None
) -> httpx.Client:
    """An httpx client of the HTTPS listener, trusting the platform CA, with a client
    certificate when given."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(httpx.get(f"{server.url}/api/v1/ca").json()["certificate"])
    context = ssl.create_default_context(cafile=str(ca_file))
    if pem is not None and key is not None:
        cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
        cert_file.write_text(pem)
        key_file.write_text(key)
        context.load_cert_chain(str(cert_file), str(key_file))
    port = server.env()["ROOST_HTTPS_PORT"]
    return httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=30)


def test_https_with_a_client_certificate_authenticates_its_device(
    proxied: RoostServer, proxied_admin: Api, tmp_path: Any
) -> None:
    device_id = new_device(proxied_admin)
    created = issue(proxied_admin, device_id)
    with https_client(proxied, tmp_path, created["certificate"], created["private_key"]) as api:
        resp = api.post("/api/v1/telemetry", json={"temperature": 5.5})
        assert resp.status_code == 200, resp.text
        assert temperatures(proxied_admin, device_id) == [5.5]
        assert proxied_admin.delete(certs_path(device_id, created["id"])).status_code == 204
        assert_problem(api.post("/api/v1/telemetry", json={"temperature": 6}), 403, "revoked")
    with https_client(proxied, tmp_path, None, None) as api:  # no certificate: like plain HTTP
        assert_problem(api.post("/api/v1/telemetry", json={"temperature": 7}), 401)
        assert api.get("/healthz").status_code == 200
    assert temperatures(proxied_admin, device_id) == [5.5]


def test_https_refuses_another_cas_certificate(
    proxied: RoostServer, proxied_admin: Api, tmp_path: Any
) -> None:
    device_id = new_device(proxied_admin)
    other_ca = CertificateAuthority.generate(datetime.now(UTC))
    key = ec.generate_private_key(ec.SECP256R1())
    name = DeviceName("default", device_id, 0)
    lookalike = other_ca.issue_device_certificate(key.public_key(), name, datetime.now(UTC))
    with (
        https_client(proxied, tmp_path, lookalike.pem, private_key_pem(key)) as api,
        pytest.raises(httpx.TransportError),  # the TLS layer refuses it (bad certificate alert)
    ):
        api.post("/api/v1/telemetry", json={"temperature": 8})
    assert temperatures(proxied_admin, device_id) == []
