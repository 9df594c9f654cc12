"""A real SWUpdate image (``.swu``) for the tests, and the swupdate command that installs it.

A ``.swu`` is a cpio archive in the "newc" format whose first member is ``sw-description`` (a
libconfig document naming the images and the handler that installs each). Debian's swupdate is
built for signed images: it refuses to start without a public key (``-k``) and then wants
``sw-description.sig``, a detached CMS signature of ``sw-description`` (DER), as the second
member; every image carries its sha256 in ``sw-description``. It also checks the hardware
compatibility list against the board revision given with ``-H`` (no ``/etc/hwrevision`` here).

The image here is one file installed by the ``rawfile`` handler to a path of the test's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

# The board and revision swupdate is told it runs on (-H), and the image accepts.
BOARD = "roost-test"
REVISION = "1.0"
# cpio newc: a header of "070701" and 13 eight-digit hexadecimal fields, then the name (with its
# NUL) and the data, each padded to a multiple of four bytes.
NEWC_MAGIC = "070701"
REGULAR_FILE = 0o100644
TRAILER = "TRAILER!!!"


def newc_archive(members: list[tuple[str, bytes]]) -> bytes:
    """A cpio "newc" archive of regular files, in the order given, with its trailer."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for inode, (name, data) in enumerate([*members, (TRAILER, b"")], start=1):
        encoded = name.encode() + b"\0"
        mode = 0 if name == TRAILER else REGULAR_FILE
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out.extend((NEWC_MAGIC + "".join(f"{value:08X}" for value in fields)).encode())
        out.extend(encoded)
        pad()
        out.extend(data)
        pad()
    return bytes(out)


@dataclass(frozen=True)
class SignedImage:
    """A signed ``.swu`` and the certificate that verifies it (swupdate's ``-k``)."""

    swu: bytes
    certificate_pem: bytes
    version: str
    payload: bytes


def _signer() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roost test image signer")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=7))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def build_swu(version: str, install_to: Path, payload: bytes) -> SignedImage:
    """A signed ``.swu`` of ``version`` whose one file is installed at ``install_to``."""
    description = f"""software =
{{
	version = "{version}";
	description = "Roost DDI test image";
	hardware-compatibility = [ "{REVISION}" ];
	files: (
		{{
			filename = "payload.bin";
			path = "{install_to}";
			type = "rawfile";
			sha256 = "{hashlib.sha256(payload).hexdigest()}";
		}}
	);
}}
""".encode()
    key, cert = _signer()
    signature = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(description)
        .add_signer(cert, key, hashes.SHA256())
        .sign(
            serialization.Encoding.DER,
            [
                pkcs7.PKCS7Options.DetachedSignature,
                pkcs7.PKCS7Options.Binary,
                pkcs7.PKCS7Options.NoCapabilities,
            ],
        )
    )
    swu = newc_archive(
        [
            ("sw-description", description),
            ("sw-description.sig", signature),
            ("payload.bin", payload),
        ]
    )
    return SignedImage(swu, cert.public_bytes(serialization.Encoding.PEM), version, payload)
