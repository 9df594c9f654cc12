"""The platform CA (pure): issuing from CSRs, names, verification, sealing the key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from roost.credentials.certificates import ca
from roost.credentials.certificates.ca import (
    CertificateAuthority,
    DeviceName,
    InvalidClientCertificate,
)
from roost.errors import AuthenticationFailed, ConfigError, InvalidInput

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NAME = DeviceName("acme", "pump/7:a", 1763812800123456)


@pytest.fixture(scope="module")
def authority() -> CertificateAuthority:
    return CertificateAuthority.generate(NOW)


def make_csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str = "ignored") -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def der_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def test_the_ca_is_a_self_signed_p256_ca_for_ten_years(authority: CertificateAuthority) -> None:
    cert = authority.certificate
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - NOW == timedelta(days=ca.CA_VALIDITY_DAYS)
    assert authority.signed(cert)


def test_a_device_certificate_uses_the_csr_key_and_names_the_device(
    authority: CertificateAuthority,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = ca.read_csr(make_csr(key, cn="someone-else"))
    issued = authority.issue_device_certificate(public, NAME, NOW, days=30)
    cert = issued.certificate
    assert cert.public_key() == key.public_key()
    # The CSR's subject is ignored: CN is the device id, the URI SAN names it exactly.
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NAME.device_id
    assert ca.device_name_of(cert) == NAME
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert issued.not_after == (NOW + timedelta(days=30)).replace(microsecond=0)
    assert issued.serial == format(cert.serial_number, "x")
    assert issued.fingerprint == ca.fingerprint(der_of(cert))
    assert authority.verify_client_certificate(der_of(cert), NOW) == cert


def test_serials_are_random(authority: CertificateAuthority) -> None:
    public = ca.generate_key().public_key()
    serials = {authority.issue_device_certificate(public, NAME, NOW).serial for _ in range(5)}
    assert len(serials) == 5


def test_device_certificates_never_outlive_the_ca(authority: CertificateAuthority) -> None:
    issued = authority.issue_device_certificate(
        ca.generate_key().public_key(), NAME, NOW + timedelta(days=3600), days=365
    )
    assert issued.not_after <= authority.not_after


def test_device_uris_round_trip_and_foreign_ones_are_not_ours() -> None:
    uri = ca.device_uri(NAME.tenant_id, NAME.device_id, NAME.generation)
    assert uri.count(":") == 4  # the ':' of the device id is encoded
    assert ca.parse_device_uri(uri) == NAME
    for foreign in ("urn:other:a:b:1", "urn:roost:a:b", "urn:roost:a:b:x", "urn:roost::b:1"):
        assert ca.parse_device_uri(foreign) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a csr",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----",
    ],
)
def test_malformed_csrs_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput, match="csr"):
        ca.read_csr(text)


def test_a_csr_whose_signature_does_not_hold_is_refused() -> None:
    csr = x509.load_pem_x509_csr(make_csr(ca.generate_key()).encode())
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    forged = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(InvalidInput, match="signature"):
        ca.read_csr(forged.decode())


def test_a_short_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidInput, match="2048"):
        ca.read_csr(make_csr(weak))


def test_another_cas_certificate_is_refused(authority: CertificateAuthority) -> None:
    other = CertificateAuthority.generate(NOW, common_name="Roost platform CA")  # same name
    cert = other.issue_device_certificate(ca.generate_key().public_key(), NAME, NOW).certificate
    assert not authority.signed(cert)
    with pytest.raises(InvalidClientCertificate, match="not issued"):
        authority.verify_client_certificate(der_of(cert), NOW)
    assert InvalidClientCertificate.status == 403


def test_a_certificate_outside_its_validity_is_refused(authority: CertificateAuthority) -> None:
    issued = authority.issue_device_certificate(ca.generate_key().public_key(), NAME, NOW, days=1)
    der = der_of(issued.certificate)
    with pytest.raises(InvalidClientCertificate, match="validity"):
        authority.verify_client_certificate(der, NOW + timedelta(days=2))
    with pytest.raises(InvalidClientCertificate, match="validity"):
        authority.verify_client_certificate(der, NOW - timedelta(hours=1))


def test_garbage_is_a_malformed_certificate(authority: CertificateAuthority) -> None:
    with pytest.raises(AuthenticationFailed, match="malformed") as caught:
        authority.verify_client_certificate(b"\x30\x03garbage", NOW)
    assert caught.value.status == 401


def test_the_sealed_key_opens_only_with_the_same_secret(authority: CertificateAuthority) -> None:
    sealed = ca.seal_private_key(authority.key, "secret-1")
    assert b"PRIVATE" not in sealed.encode()
    opened = ca.open_private_key(sealed, "secret-1")
    assert opened.private_numbers() == authority.key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="secret key"):
        ca.open_private_key(sealed, "secret-2")


def test_an_operator_ca_is_loaded_from_pem_and_checked(authority: CertificateAuthority) -> None:
    cert_pem = authority.pem.encode()
    key_pem = ca.private_key_pem(authority.key).encode()  # type: ignore[arg-type]
    assert CertificateAuthority.from_pem(cert_pem, key_pem).certificate == authority.certificate
    with pytest.raises(ConfigError, match="does not belong"):
        CertificateAuthority.from_pem(cert_pem, ca.private_key_pem(ca.generate_key()).encode())
    leaf = authority.issue_device_certificate(authority.key.public_key(), NAME, NOW)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a CA"):
        CertificateAuthority.from_pem(leaf.pem.encode(), key_pem)
    with pytest.raises(ConfigError, match="cannot read"):
        CertificateAuthority.from_pem(b"nope", key_pem)


def test_the_server_certificate_covers_names_and_addresses(
    authority: CertificateAuthority,
) -> None:
    issued = authority.issue_server_certificate(
        ca.generate_key().public_key(), ("localhost", "127.0.0.1", "roost.example"), NOW
    )
    sans = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["localhost", "roost.example"]
    assert [str(a) for a in sans.value.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert authority.signed(issued.certificate)


def test_pem_to_der_round_trips_and_refuses_other_text(authority: CertificateAuthority) -> None:
    assert ca.pem_to_der(authority.pem) == der_of(authority.certificate)
    with pytest.raises(InvalidInput):
        ca.pem_to_der("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----")
