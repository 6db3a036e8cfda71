"""The object store (Ceph RADOS Gateway or any S3 API) as streamml uses it.

Path-style addressing and SigV4 work against Ceph and MinIO as well as AWS.
Conditional writes are the only coordination primitive: ``create`` fails with
:class:`ObjectConflict` when the key exists (``If-None-Match: *``) and
``replace`` fails with it when the object changed since it was read
(``If-Match: <etag>``). Both are how versions stay immutable and how the
champion pointer is swapped safely.

    store = ObjectStore.connect(settings.s3)
    etag = store.create("models/fraud/champion.json", b"{...}")
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)

from streamml.settings import S3Settings

MULTIPART_THRESHOLD = 64 * 1024 * 1024
# S3 error codes (and bare HTTP statuses, for HEAD requests, which have no body)
# that say the service cannot answer now, not that the request is wrong.
UNAVAILABLE_CODES = frozenset({
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "BadGateway", "SlowDown",
    "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded",
})


class StoreError(Exception):
    """An object store problem, described for the person who can fix it."""


class StoreUnavailable(StoreError):
    """The store is away or overloaded for now (no answer, a timeout, 5xx, SlowDown); retry later."""


class StoreCredentialsError(StoreError):
    pass


class BucketMissing(StoreError):
    pass


class ObjectNotFound(StoreError):
    pass


class ObjectConflict(StoreError):
    """A conditional write lost: the key exists, or changed since it was read."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    data: bytes
    etag: str
    modified: datetime | None = None
    """When the object was last written, by the store's clock."""
    read_at: datetime | None = None
    """When it was read, by the store's clock (the response's Date): with ``modified``, its age
    without trusting this host's clock (leases)."""

    def age_s(self) -> float | None:
        """Seconds since the object was written, by the store's clock; None when the store did not say."""
        if self.modified is None or self.read_at is None:
            return None
        return (self.read_at - self.modified).total_seconds()


@dataclass(frozen=True)
class ListedObject:
    """A key as a listing shows it: its size, ETag (the MD5 of an object written in one part) and last write."""

    key: str
    size: int
    etag: str
    modified: datetime


class ReadableStore(Protocol):
    """What reading needs from :class:`ObjectStore` (tests pass in-memory stores)."""

    def get(self, key: str) -> StoredObject: ...


class ObjectStore:
    def __init__(self, settings: S3Settings, client: object) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._s3 = client
        self._where = f"bucket {settings.bucket!r} at {settings.endpoint or 'AWS S3'}"

    @classmethod
    def connect(cls, settings: S3Settings) -> ObjectStore:
        """Client plus a check that the endpoint, credentials and bucket work."""
        # One attempt per check, so a dead endpoint fails start within the connect timeout.
        cls(settings, make_client(settings.model_copy(update={"max_attempts": 1}))).check()
        return cls(settings, make_client(settings))

    @classmethod
    def for_probing(cls, settings: S3Settings, timeout_s: float = 2.0) -> ObjectStore:
        """A client that tries each request once and waits at most ``timeout_s``: for health checks."""
        quick = settings.model_copy(
            update={"max_attempts": 1, "connect_timeout_s": min(timeout_s, settings.connect_timeout_s)}
        )
        return cls(settings, make_client(quick, read_timeout_s=timeout_s))

    def check(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = _code(error)
            if code in ("404", "NoSuchBucket") and self.settings.create_bucket:
                self._create_bucket()
                return
            raise self._translate(error, "") from None
        except (BotoCoreError, OSError) as error:
            raise self._unreachable(error) from None

    def _create_bucket(self) -> None:
        try:
            self._s3.create_bucket(Bucket=self.bucket)
        except ClientError as error:
            if _code(error) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._translate(error, "") from None

    def get(self, key: str) -> StoredObject:
        response = self._call("get_object", key, Key=key)
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        return StoredObject(key, response["Body"].read(), response["ETag"], response.get("LastModified"),
                            parsedate_to_datetime(date) if date else None)

    def get_bytes(self, key: str) -> bytes:
        return self.get(key).data

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key, Key=key)
        except ObjectNotFound:
            return False
        return True

    def put(self, key: str, data: bytes) -> str:
        """Unconditional write; returns the new ETag."""
        return self._call("put_object", key, Key=key, Body=data)["ETag"]

    def create(self, key: str, data: bytes) -> str:
        """Write only if ``key`` does not exist yet; raises ObjectConflict otherwise."""
        return self._call("put_object", key, Key=key, Body=data, IfNoneMatch="*")["ETag"]

    def replace(self, key: str, data: bytes, etag: str) -> str:
        """Write only if the object still has ``etag``; raises ObjectConflict otherwise."""
        # Ceph RGW 16.2 compares If-Match without the quotes S3 puts around ETags.
        unquoted = etag.strip('"')
        return self._call("put_object", key, Key=key, Body=data, IfMatch=unquoted)["ETag"]

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file, in parts when large."""
        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD)
        try:
            self._s3.upload_file(str(path), self.bucket, key, Config=config)
        except ClientError as error:
            raise self._translate(error, key) from None
        except (BotoCoreError, OSError) as error:
            if isinstance(getattr(error, "last_exception", None), ClientError):
                raise self._translate(error.last_exception, key) from None
            raise self._unreachable(error) from None

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; how many there were."""
        keys = list(self.list(prefix))
        for key in keys:
            self.delete(key)
        return len(keys)

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` in lexicographic order."""
        for item in self.list_details(prefix):
            yield item.key

    def list_details(self, prefix: str) -> Iterator[ListedObject]:
        """The objects under ``prefix`` in lexicographic order, with size and ETag (no extra request)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ListedObject(item["Key"], item["Size"], item["ETag"].strip('"'), item["LastModified"])
        except ClientError as error:
            raise self._translate(error, prefix) from None
        except (BotoCoreError, OSError) as error:
            raise self._unreachable(error) from None

    def list_prefixes(self, prefix: str) -> list[str]:
        """Immediate "sub-folders" of ``prefix`` (each ending in /)."""
        paginator = self._s3.get_paginator("list_objects_v2")
        found: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                found.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
        except ClientError as error:
            raise self._translate(error, prefix) from None
        except (BotoCoreError, OSError) as error:
            raise self._unreachable(error) from None
        return found

    def _call(self, operation: str, key: str, **kwargs: object) -> dict:
        try:
            return getattr(self._s3, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as error:
            raise self._translate(error, key) from None
        except (BotoCoreError, OSError) as error:
            raise self._unreachable(error) from None

    def _translate(self, error: ClientError, key: str) -> StoreError:
        code = _code(error)
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            return ObjectConflict(f"conditional write of {key!r} lost in {self._where}")
        if code in ("NoSuchKey", "404") and key:
            return ObjectNotFound(f"no object {key!r} in {self._where}")
        if code in ("NoSuchBucket", "404"):
            return BucketMissing(
                f"{self._where} does not exist: create it, or set STREAMML_S3_CREATE_BUCKET=true"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied"):
            return StoreCredentialsError(
                f"access denied to {self._where} ({code}): check STREAMML_S3_ACCESS_KEY_ID "
                "and STREAMML_S3_SECRET_ACCESS_KEY"
            )
        if code in UNAVAILABLE_CODES:
            return StoreUnavailable(f"{code} on {key!r} from {self._where}: it cannot answer now")
        return StoreError(f"{code} on {key!r} in {self._where}: {error}")

    def _unreachable(self, error: Exception) -> StoreError:
        if isinstance(error, NoCredentialsError):
            return StoreCredentialsError(
                f"no credentials for {self._where}: set STREAMML_S3_ACCESS_KEY_ID "
                "and STREAMML_S3_SECRET_ACCESS_KEY"
            )
        return StoreUnavailable(f"cannot reach {self._where}: {error}; check STREAMML_S3_ENDPOINT")


def make_client(settings: S3Settings, read_timeout_s: float = 60) -> object:
    """A boto3 S3 client: path-style, SigV4, standard retries with backoff."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": settings.max_attempts, "mode": "standard"},
        connect_timeout=settings.connect_timeout_s,
        read_timeout=read_timeout_s,
        # Ceph RGW rejects the CRC checksums newer botocore sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    secret = settings.secret_access_key
    access = settings.access_key_id
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        region_name=settings.region,
        aws_access_key_id=access.get_secret_value() if access else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=config,
    )


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "")) or str(
        error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )
