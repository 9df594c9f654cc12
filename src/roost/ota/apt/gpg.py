"""The APT signing key: GnuPG (the ``gpg`` binary) in a private home under the data directory.

One platform key signs every tenant's repositories, as the platform CA signs every device
certificate: an Ed25519 OpenPGP key made once, in batch mode with no passphrase, by the first
Roost process that needs it. Its armoured secret key is sealed in the database (AES-256-GCM under
a key derived from ``ROOST_SECRET_KEY``, like the CA's) so that every process of a deployment
imports and signs with the same key; the GnuPG home (``<data dir>/apt-gnupg``) is only a working
copy. Devices trust the public key served at ``GET /api/v1/apt/key.asc`` (apt's ``signed-by=``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from roost.credentials.keys.service import SecretBox
from roost.errors import ConfigError, Conflict, Unavailable
from roost.ota.apt.tables import ota_apt_keys
from roost.store.database import Database
from roost.store.queries import fetch_one

log = logging.getLogger(__name__)

#: The key's user id (an OpenPGP key needs one; apt shows it when a signature fails).
KEY_USER_ID = "Roost APT repository signing key <apt@roost.invalid>"
#: Ed25519: short signatures, fast, and verified by apt's gpgv since Debian 10.
KEY_ALGORITHM = "ed25519"
#: A signing failure that outlasts this is a stuck agent, not a slow machine.
GPG_TIMEOUT_S = 30.0
#: The row of ``ota_apt_keys`` holding the one platform key.
KEY_ROW = "platform"
# Bound to the sealed key as associated data: a sealed secret of another kind never opens as it.
_SEAL_CONTEXT = "roost apt signing key v1"
# The digest of signatures: apt refuses SHA1 signatures, SHA512 is what Debian signs with.
_DIGEST = "SHA512"


def seal(text: str, secret_key: str) -> str:
    """``text`` encrypted under the secret key (:class:`SecretBox`), Base64."""
    sealed = SecretBox(secret_key).seal(text.encode("utf-8"), _SEAL_CONTEXT)
    return base64.b64encode(sealed).decode("ascii")


def unseal(sealed: str, secret_key: str) -> str:
    """What :func:`seal` sealed; ConfigError when ``secret_key`` is another one."""
    try:
        plain = SecretBox(secret_key).open(base64.b64decode(sealed), _SEAL_CONTEXT)
    except ValueError as exc:
        raise ConfigError(
            "the APT signing key in the database cannot be decrypted: this process has another "
            "secret key (ROOST_SECRET_KEY) than the one that created it"
        ) from exc
    return plain.decode("utf-8")


class GnuPG:
    """The ``gpg`` binary working in one private home directory (batch mode, no prompts)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def _binary(self) -> str:
        found = shutil.which("gpg")
        if found is None:
            raise Unavailable(
                "the APT repository needs GnuPG: install the gpg binary (Debian package gnupg)"
            )
        return found

    def _prepare(self) -> None:
        # gpg warns (and agents may refuse) when its home is readable by others.
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)

    async def run(self, *args: str, stdin: bytes = b"") -> bytes:
        """Run ``gpg`` with ``args`` in the private home; its standard output."""
        self._prepare()
        process = await asyncio.create_subprocess_exec(
            self._binary(),
            "--homedir",
            str(self.home),
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
            # No input: no pipe (gpg may exit before an empty write, a broken pipe then).
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin or None), GPG_TIMEOUT_S)
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise Unavailable(f"gpg {args[0]} did not answer in {GPG_TIMEOUT_S:.0f} s") from exc
        if process.returncode != 0:
            message = err.decode("utf-8", "replace").strip()
            log.error("gpg %s failed (exit %s): %s", args[0], process.returncode, message)
            raise Unavailable(f"gpg {args[0]} failed: {message[-300:]}")
        return out

    async def generate(self) -> str:
        """Make a new signing key (no passphrase, no expiry); its fingerprint."""
        await self.run("--quick-generate-key", KEY_USER_ID, KEY_ALGORITHM, "sign", "never")
        fingerprints = await self.secret_fingerprints()
        if not fingerprints:
            raise Unavailable("gpg made no key")
        return fingerprints[-1]

    async def secret_fingerprints(self) -> list[str]:
        """The fingerprints of the secret keys of the home, oldest first."""
        listing = await self.run("--with-colons", "--list-secret-keys")
        fingerprints: list[str] = []
        expect_primary = False
        for line in listing.decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if fields[0] == "sec":
                expect_primary = True
            elif fields[0] == "fpr" and expect_primary:
                fingerprints.append(fields[9])
                expect_primary = False
        return fingerprints

    async def export_public(self, fingerprint: str) -> str:
        """The armoured public key."""
        return (await self.run("--armor", "--export", fingerprint)).decode("ascii")

    async def export_secret(self, fingerprint: str) -> str:
        """The armoured secret key (to be sealed in the database)."""
        return (await self.run("--armor", "--export-secret-keys", fingerprint)).decode("ascii")

    async def import_key(self, armored: str) -> None:
        """Import an armoured (secret) key into the home."""
        await self.run("--import", stdin=armored.encode("ascii"))

    async def clearsign(self, fingerprint: str, data: bytes) -> bytes:
        """``data`` clear-signed (an ``InRelease`` file)."""
        return await self.run(
            "--local-user", fingerprint, "--digest-algo", _DIGEST, "--clearsign", stdin=data
        )

    async def detach_sign(self, fingerprint: str, data: bytes) -> bytes:
        """An armoured detached signature of ``data`` (a ``Release.gpg`` file)."""
        return await self.run(
            "--local-user",
            fingerprint,
            "--digest-algo",
            _DIGEST,
            "--armor",
            "--detach-sign",
            stdin=data,
        )

    async def stop_agent(self) -> None:
        """Stop the gpg-agent that signing started for this home (it would outlive the server)."""
        gpgconf = shutil.which("gpgconf")
        if gpgconf is None or not self.home.exists():
            return
        process = await asyncio.create_subprocess_exec(
            gpgconf,
            "--homedir",
            str(self.home),
            "--kill",
            "gpg-agent",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await asyncio.wait_for(process.wait(), GPG_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


class SigningKey:
    """The platform APT key: loaded from the database (made on first use), signing with gpg."""

    def __init__(self, db: Database, home: Path, secret_key: str, clock: Callable[[], datetime]):
        self.db = db
        self.gpg = GnuPG(home)
        self.secret_key = secret_key
        self.clock = clock
        self._lock = asyncio.Lock()
        self._fingerprint: str | None = None
        self._public_key = ""

    async def fingerprint(self) -> str:
        """The key's fingerprint, once the key is in the private GnuPG home."""
        await self._ready()
        assert self._fingerprint is not None
        return self._fingerprint

    async def public_key(self) -> str:
        """The armoured public key devices trust."""
        await self._ready()
        return self._public_key

    async def _ready(self) -> None:
        if self._fingerprint is not None:
            return
        async with self._lock:
            if self._fingerprint is None:
                await self._load()

    async def _stored(self) -> dict[str, Any] | None:
        async with self.db.read() as conn:
            return await fetch_one(
                conn, sa.select(ota_apt_keys).where(ota_apt_keys.c.id == KEY_ROW)
            )

    async def _load(self) -> None:
        row = await self._stored()
        if row is None:
            row = await self._create()
        fingerprint = str(row["fingerprint"])
        if fingerprint not in await self.gpg.secret_fingerprints():
            await self.gpg.import_key(unseal(row["sealed_secret_key"], self.secret_key))
        self._public_key = str(row["public_key"])
        self._fingerprint = fingerprint

    async def _create(self) -> dict[str, Any]:
        """Make the key and store it; another process that stored one first wins."""
        fingerprint = await self.gpg.generate()
        row = {
            "id": KEY_ROW,
            "fingerprint": fingerprint,
            "public_key": await self.gpg.export_public(fingerprint),
            "sealed_secret_key": seal(await self.gpg.export_secret(fingerprint), self.secret_key),
            "created_at": self.clock(),
        }
        try:
            async with self.db.write() as conn:
                await conn.execute(ota_apt_keys.insert().values(**row))
        except Conflict:
            stored = await self._stored()
            if stored is None:
                raise
            return stored
        log.info("made the APT signing key %s", fingerprint)
        return row

    async def clearsign(self, data: bytes) -> bytes:
        """``data`` clear-signed with the key (``InRelease``)."""
        return await self.gpg.clearsign(await self.fingerprint(), data)

    async def detach_sign(self, data: bytes) -> bytes:
        """An armoured detached signature of ``data`` (``Release.gpg``)."""
        return await self.gpg.detach_sign(await self.fingerprint(), data)

    async def close(self) -> None:
        """Stop the gpg-agent of the private home."""
        await self.gpg.stop_agent()
