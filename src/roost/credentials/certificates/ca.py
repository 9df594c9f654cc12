"""The platform certificate authority and X.509 helpers (pure: no IO, no database).

Roost's CA is an EC P-256 key with a self-signed certificate. It signs

* device certificates: subject CN = the device id, and one URI SAN
  ``urn:roost:{tenant}:{device}:{generation}`` (each part percent-encoded) that names the
  device exactly, generation included, so that a device deleted and created again under the same
  id is not opened by the old device's certificates (as for tokens, see
  :mod:`roost.credentials.tokens.signing`);
* the server certificate of the TLS listeners (DNS and IP SANs for ``settings.tls_hostnames``).

It also holds the helpers the certificate service needs: reading CSRs (their key is used, their
subject ignored), generating a key pair for devices that cannot make one, fingerprints, and
sealing the CA key for storage (AES-GCM under a key derived with HKDF from Roost's secret key).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from roost.errors import AuthenticationFailed, ConfigError, InvalidInput

#: The CA certificate's life; device certificates never outlive it.
CA_VALIDITY_DAYS = 3650
#: A device certificate's default life (a request may ask for 1 … MAX_DEVICE_DAYS).
DEVICE_VALIDITY_DAYS = 365
MAX_DEVICE_DAYS = 3650
#: The TLS server certificate's life; it is issued again at start when it nears its end.
SERVER_VALIDITY_DAYS = 365
#: Certificates are valid from a little before they were issued: device and server clocks differ.
BACKDATE = timedelta(minutes=5)
#: A CSR is a few hundred bytes; anything far larger is not one, and parsing it costs work.
MAX_CSR_BYTES = 16 * 1024
#: A client certificate larger than this is refused unparsed (ours are ~600 bytes).
MAX_CERTIFICATE_BYTES = 16 * 1024
URI_PREFIX = "urn:roost:"
_HKDF_INFO = b"roost platform CA key v1"
_NONCE_BYTES = 12

CertificatePublicKey = (
    ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


class InvalidClientCertificate(AuthenticationFailed):
    """A well-formed certificate that does not prove anything: another CA's, a bad signature,
    outside its validity, or without Roost's device name. Answered 403 like a forged token."""

    status = 403
    title = "Forbidden"


@dataclass(frozen=True, slots=True)
class DeviceName:
    """What a device certificate's URI SAN names."""

    tenant_id: str
    device_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate just signed, with what the certificate row stores about it."""

    certificate: x509.Certificate
    pem: str
    serial: str  # hexadecimal
    fingerprint: str  # SHA-256 of the DER, hexadecimal
    not_before: datetime
    not_after: datetime


# -- names ---------------------------------------------------------------------------------------


def device_uri(tenant_id: str, device_id: str, generation: int) -> str:
    """The URI SAN of a device certificate."""
    return f"{URI_PREFIX}{quote(tenant_id, safe='')}:{quote(device_id, safe='')}:{generation}"


def parse_device_uri(uri: str) -> DeviceName | None:
    """The device a URI SAN names, or None when it is not one of Roost's."""
    if not uri.startswith(URI_PREFIX):
        return None
    parts = uri[len(URI_PREFIX) :].split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    tenant_id, device_id = unquote(parts[0]), unquote(parts[1])
    if not tenant_id or not device_id:
        return None
    return DeviceName(tenant_id, device_id, int(parts[2]))


def device_name_of(certificate: x509.Certificate) -> DeviceName | None:
    """The device named by the certificate's URI SAN (None when there is no Roost URI)."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        name = parse_device_uri(uri)
        if name is not None:
            return name
    return None


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate's DER, in hexadecimal (how certificate rows are found)."""
    return hashlib.sha256(der).hexdigest()


# -- PEM and keys ----------------------------------------------------------------------------------


def certificate_pem(certificate: x509.Certificate) -> str:
    """A certificate as PEM text."""
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    """An unencrypted private key as PKCS#8 PEM (what TLS clients such as mosquitto read)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 key (for the CA, the server, and devices that cannot make their own)."""
    return ec.generate_private_key(ec.SECP256R1())


def pem_to_der(pem: str | bytes) -> bytes:
    """The DER of a PEM certificate; InvalidInput when it is not one."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    except ValueError as exc:
        raise InvalidInput("not a PEM certificate") from exc


def read_csr(pem: str) -> CertificatePublicKey:
    """The public key of a PEM certificate signing request whose signature holds.

    The CSR's subject and extensions are ignored: Roost names the device itself. Raises
    InvalidInput (422) for anything that is not a well-formed, self-consistent CSR with a key
    Roost can put in a certificate.
    """
    data = pem.encode("utf-8", "replace")
    if len(data) > MAX_CSR_BYTES:
        raise InvalidInput(f"csr is larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise InvalidInput(
            "csr is not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)"
        ) from exc
    try:
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise InvalidInput(f"csr cannot be read: {exc}") from exc
    if not valid:
        raise InvalidInput("csr signature does not match its public key")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise InvalidInput("csr RSA key is too short (at least 2048 bits)")
    if not isinstance(
        key,
        ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    ):
        raise InvalidInput("csr key type is not supported (use EC P-256/P-384, RSA or Ed25519)")
    return key


# -- sealing the CA key ----------------------------------------------------------------------------


def _sealing_key(secret_key: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secret_key.encode("utf-8")
    )
    return AESGCM(derived)


def seal_private_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, secret_key: str) -> str:
    """The key encrypted (AES-256-GCM, key from HKDF-SHA256 of ``secret_key``), Base64 text."""
    nonce = os.urandom(_NONCE_BYTES)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return base64.b64encode(nonce + _sealing_key(secret_key).encrypt(nonce, der, None)).decode()


def open_private_key(sealed: str, secret_key: str) -> ec.EllipticCurvePrivateKey:
    """The key :func:`seal_private_key` sealed; ConfigError when ``secret_key`` is another."""
    raw = base64.b64decode(sealed)
    try:
        der = _sealing_key(secret_key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
    except InvalidTag as exc:
        raise ConfigError(
            "the platform CA key in the database cannot be decrypted: this process has another "
            "secret key (ROOST_SECRET_KEY) than the one that created the CA"
        ) from exc
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the stored platform CA key is not an EC key")
    return key


# -- the authority ---------------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _random_serial() -> int:
    return x509.random_serial_number()


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

    @classmethod
    def generate(
        cls, now: datetime, common_name: str = "Roost platform CA"
    ) -> CertificateAuthority:
        """A new self-signed CA (EC P-256, :data:`CA_VALIDITY_DAYS`)."""
        key = generate_key()
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(public)
            .serial_number(_random_serial())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + timedelta(days=CA_VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def from_pem(cls, certificate_pem_data: bytes, key_pem_data: bytes) -> CertificateAuthority:
        """An operator's CA from PEM files' contents; ConfigError when they do not fit."""
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem_data)
            key = serialization.load_pem_private_key(key_pem_data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the CA certificate or key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigError("the CA key must be an EC or RSA key")
        if certificate.public_key() != key.public_key():
            raise ConfigError("the CA key does not belong to the CA certificate")
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise ConfigError("the CA certificate is not a CA (basicConstraints CA:TRUE)")
        return cls(certificate, key)

    @property
    def pem(self) -> str:
        """The CA certificate as PEM (public)."""
        return certificate_pem(self.certificate)

    @property
    def not_after(self) -> datetime:
        """When the CA certificate ends."""
        return self.certificate.not_valid_after_utc

    def _issue(
        self,
        builder: x509.CertificateBuilder,
        public_key: CertificatePublicKey,
        now: datetime,
        days: int,
    ) -> IssuedCertificate:
        not_before = (now - BACKDATE).replace(microsecond=0)
        not_after = min(now + timedelta(days=days), self.not_after).replace(microsecond=0)
        ca_public = self.key.public_key()
        certificate = (
            builder.issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(_random_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        return IssuedCertificate(
            certificate=certificate,
            pem=certificate_pem(certificate),
            serial=format(certificate.serial_number, "x"),
            fingerprint=fingerprint(der),
            not_before=not_before,
            not_after=not_after,
        )

    def issue_device_certificate(
        self,
        public_key: CertificatePublicKey,
        name: DeviceName,
        now: datetime,
        days: int = DEVICE_VALIDITY_DAYS,
    ) -> IssuedCertificate:
        """A client certificate for one device (CN = device id, URI SAN names it exactly)."""
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name.device_id[:64]))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(
                            device_uri(name.tenant_id, name.device_id, name.generation)
                        )
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        return self._issue(builder, public_key, now, days)

    def issue_server_certificate(
        self,
        public_key: CertificatePublicKey,
        hostnames: tuple[str, ...],
        now: datetime,
        days: int = SERVER_VALIDITY_DAYS,
    ) -> IssuedCertificate:
        """The TLS listeners' certificate, for every name and address in ``hostnames``."""
        names: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name((hostnames[0] if hostnames else "roost")[:64]))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        return self._issue(builder, public_key, now, days)

    def signed(self, certificate: x509.Certificate) -> bool:
        """True when this CA signed ``certificate`` (its issuer name and signature)."""
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def verify_client_certificate(self, der: bytes, now: datetime) -> x509.Certificate:
        """The certificate in ``der`` if this CA signed it and it is valid at ``now``.

        Raises AuthenticationFailed (401) for bytes that are not a certificate, and
        :class:`InvalidClientCertificate` (403) for another CA's, a forged or an expired one.
        """
        if len(der) > MAX_CERTIFICATE_BYTES:
            raise AuthenticationFailed("malformed client certificate: too large")
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise AuthenticationFailed("malformed client certificate") from exc
        if not self.signed(certificate):
            raise InvalidClientCertificate("client certificate not issued by this Roost's CA")
        if not (
            certificate.not_valid_before_utc
            <= now.astimezone(UTC)
            <= certificate.not_valid_after_utc
        ):
            raise InvalidClientCertificate("client certificate is outside its validity period")
        return certificate
