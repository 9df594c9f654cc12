"""Blobs in an S3-compatible object store (scale mode), through aiobotocore (the ``s3`` extra).

``ROOST_BLOB_URL=s3://bucket/prefix?endpoint=http://host:port&region=us-east-1`` — credentials
from the usual AWS environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
profiles …) or the URL's ``access_key``/``secret_key`` query parameters. A blob small enough is
one PUT; a larger one a multipart upload in parts of :data:`PART_BYTES` (nothing is visible under
the key until the upload completes; an abort removes the parts). Reads are ranged GETs, streamed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from roost.errors import ConfigError
from roost.ota.blobs.base import CHUNK_BYTES, BlobStore, BlobWriter, Chunk

# A multipart upload's part: S3 wants at least 5 MiB for every part but the last; 8 MiB is what
# the AWS CLI uses, and bounds what one upload holds in memory.
PART_BYTES = 8 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3BlobWriter(BlobWriter):
    """A blob being uploaded: parts buffered to :data:`PART_BYTES`, multipart when larger."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self.store = store
        self.key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def write(self, data: bytes) -> None:
        """Buffer ``data``; upload a part whenever a whole one is buffered."""
        self._buffer += data
        while len(self._buffer) >= PART_BYTES:
            part = bytes(self._buffer[:PART_BYTES])
            del self._buffer[:PART_BYTES]
            await self._upload_part(part)

    async def _upload_part(self, part: bytes) -> None:
        client = self.store.client
        if self._upload_id is None:
            made = await client.create_multipart_upload(Bucket=self.store.bucket, Key=self.key)
            self._upload_id = str(made["UploadId"])
        number = len(self._parts) + 1
        answer = await client.upload_part(
            Bucket=self.store.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=part,
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def commit(self) -> None:
        """One PUT for a small blob, else the last part and the multipart completion."""
        client = self.store.client
        if self._upload_id is None:
            await client.put_object(
                Bucket=self.store.bucket, Key=self.key, Body=bytes(self._buffer)
            )
        else:
            if self._buffer:
                await self._upload_part(bytes(self._buffer))
            await client.complete_multipart_upload(
                Bucket=self.store.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._buffer = bytearray()

    async def abort(self) -> None:
        """Drop the buffer and the uploaded parts."""
        self._buffer = bytearray()
        if self._upload_id is not None:
            with contextlib.suppress(ClientError):
                await self.store.client.abort_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=self._upload_id
                )
            self._upload_id = None


class S3BlobStore(BlobStore):
    """Blobs as objects ``prefix + key`` in one bucket."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = endpoint
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        """The store ``s3://bucket/prefix?endpoint=…&region=…&access_key=…&secret_key=…``."""
        parts = urlsplit(url)
        if not parts.netloc:
            raise ConfigError(f"ROOST_BLOB_URL {url!r}: name the bucket (s3://bucket/prefix)")
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        return cls(
            parts.netloc,
            parts.path,
            endpoint=query.get("endpoint"),
            region=query.get("region"),
            access_key=query.get("access_key"),
            secret_key=query.get("secret_key"),
        )

    @property
    def client(self) -> Any:
        """The open S3 client (after :meth:`start`)."""
        if self._client is None:
            raise RuntimeError("the S3 blob store is not started")
        return self._client

    async def start(self) -> None:
        """Open the client (one connection pool for the process)."""
        if self._client is not None:
            return
        session = get_session()
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region or "us-east-1",
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
            )
        )

    async def close(self) -> None:
        """Close the client."""
        await self._stack.aclose()
        self._client = None

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def writer(self, key: str) -> BlobWriter:
        """A writer of ``key``."""
        return S3BlobWriter(self, self._key(key))

    async def read(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """A ranged GET, streamed in chunks."""
        if end is not None and end <= start:
            return
        ranged = f"bytes={start}-{'' if end is None else end - 1}"
        answer = await self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=ranged)
        body = answer["Body"]
        try:
            async for chunk in body.iter_chunks(CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def size(self, key: str) -> int | None:
        """The object's size (HEAD), or None."""
        try:
            answer = await self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _NOT_FOUND:
                return None
            raise
        return int(answer["ContentLength"])

    async def delete(self, key: str) -> None:
        """Remove the object (S3 answers alike when it is gone)."""
        await self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
