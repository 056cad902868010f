"""Datasets at `s3://bucket/prefix` URLs (AWS S3 or an S3-compatible store such as MinIO or
Ceph): URLs, and the objects under one prefix read, written and listed with bounded retries.

The client is boto3: it reads the standard AWS environment variables and config files
(credentials, profile, region, `AWS_ENDPOINT_URL`); `MEDSHARD_S3_ENDPOINT` or an explicit
`endpoint_url` names an S3-compatible endpoint. Transient errors (connection refused or cut,
timeouts, 5xx, throttling) are retried with exponential backoff; a permanent one (no such
object or bucket, access denied, a checksum that differs) is raised at once, naming the
object."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from medshard.errors import CorruptDataError, DatasetError

__all__ = [
    "ENDPOINT_VARIABLE",
    "RetryPolicy",
    "S3Store",
    "is_url",
    "normal_url",
    "split_url",
]

ENDPOINT_VARIABLE = "MEDSHARD_S3_ENDPOINT"
SHA256_METADATA = "sha256"  # x-amz-meta-sha256: what an upload records, for resuming
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")  # two letters or more: no drive
_BLOCK = 1 << 22
_TRANSIENT_CODES = {
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_log = logging.getLogger(__name__)
T = TypeVar("T")


def is_url(value: str | Path) -> bool:
    """True for `s3://...` and for any other `scheme://` (refused by `split_url`). A Path
    made from a URL counts too: pathlib folds `s3://b/k` into `s3:/b/k`."""
    return bool(_SCHEME.match(str(value)))


def normal_url(value: str | Path) -> str:
    """`s3://bucket/prefix` without a trailing slash, also from pathlib's folded form."""
    scheme, _, rest = str(value).partition(":/")
    rest = rest[1:] if rest.startswith("/") else rest
    return f"{scheme.lower()}://{rest}".rstrip("/")


def split_url(value: str | Path) -> tuple[str, str]:
    """(bucket, prefix) of an s3:// URL; any other URL is refused in one sentence."""
    url = normal_url(value)
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3":
        raise DatasetError(
            f"{url}: medshard reads local paths and s3:// URLs (S3 and S3-compatible "
            f"stores), not {scheme}://"
        )
    if not bucket:
        raise DatasetError(f"{url}: the URL names no bucket (write s3://BUCKET/PREFIX)")
    return bucket, prefix.strip("/")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a transient error is retried: `attempts` tries in all,
    waiting `first_delay` seconds, then twice as long each time, at most `max_delay`."""

    attempts: int = 8
    first_delay: float = 0.25
    max_delay: float = 8.0

    def delays(self) -> list[float]:
        """The longest wait before each retry (a random part of it is waited)."""
        return [min(self.max_delay, self.first_delay * 2**i) for i in range(self.attempts - 1)]


class S3Store:
    """The objects under one `s3://bucket/prefix`, named by their path below it."""

    def __init__(
        self, url: str | Path, endpoint_url: str | None = None, retry: RetryPolicy | None = None
    ):
        self.bucket, self.prefix = split_url(url)
        self.url = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.endpoint_url = endpoint_url or os.environ.get(ENDPOINT_VARIABLE) or None
        self.retry = retry or RetryPolicy()
        self._client = None
        self._pid = 0
        self._lock = threading.Lock()
        self._handed: dict | None = None  # credentials a parent process resolved

    def object_url(self, name: str) -> str:
        return f"{self.url}/{name}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def get(self, name: str) -> bytes:
        """The whole object."""
        return self._call(name, lambda c: c.get_object(**self._at(name))["Body"].read())

    def get_range(self, name: str, offset: int, nbytes: int) -> bytes:
        """`nbytes` bytes of the object from `offset` (fewer where the object ends)."""
        if nbytes <= 0:
            return b""
        span = f"bytes={offset}-{offset + nbytes - 1}"
        return self._call(name, lambda c: c.get_object(**self._at(name), Range=span)["Body"].read())

    def download(self, name: str, dest: Path, sha256: str | None = None) -> str:
        """Write the object to `dest`, hashed on the way; CorruptDataError when it differs
        from `sha256`. Returns its sha256."""

        def fetch(client) -> str:
            body = client.get_object(**self._at(name))["Body"]
            digest = hashlib.sha256()
            # each block hashed and written while the next one arrives: in one thread the
            # three took as long as the three rates added up
            with open(dest, "wb") as handle, ThreadPoolExecutor(2) as pool:
                under_way: list = []
                for block in iter(lambda: body.read(_BLOCK), b""):
                    for done in under_way:
                        done.result()
                    under_way = [pool.submit(step, block) for step in (digest.update, handle.write)]
                for done in under_way:
                    done.result()
            return digest.hexdigest()

        found = self._call(name, fetch)
        if sha256 is not None and found != sha256:
            raise CorruptDataError(
                f"{self.object_url(name)}: checksum mismatch: the object is damaged or was "
                "changed after ingest"
            )
        return found

    def head(self, name: str) -> tuple[int, str | None] | None:
        """(size, the sha256 recorded at upload or None) of the object; None when absent."""

        def ask(client):
            try:
                meta = client.head_object(**self._at(name))
            except Exception as exc:
                if _code(exc) in _MISSING_CODES:
                    return None
                raise
            return meta["ContentLength"], meta.get("Metadata", {}).get(SHA256_METADATA)

        return self._call(name, ask)

    def exists(self, name: str) -> bool:
        return self.head(name) is not None

    def put_bytes(self, name: str, data: bytes) -> None:
        digest = {SHA256_METADATA: hashlib.sha256(data).hexdigest()}
        self._call(name, lambda c: c.put_object(**self._at(name), Body=data, Metadata=digest))

    def put_file(self, name: str, path: Path, sha256: str) -> None:
        """Upload a file (in parts, several at a time, when large), recording its sha256."""
        extra = {"Metadata": {SHA256_METADATA: sha256}}

        def upload(client) -> None:
            try:
                client.upload_file(str(path), self.bucket, self.key(name), ExtraArgs=extra)
            except Exception as exc:  # boto3 wraps the cause in S3UploadFailedError
                if _is_wrapped(exc):
                    raise exc.__context__ from exc
                raise

        self._call(name, upload)

    def list(self, under: str = "", limit: int | None = None) -> dict[str, int]:
        """{name: size} of the objects whose name starts with `under` (the first `limit`)."""

        def walk(client) -> dict[str, int]:
            found = {}
            start = self.key(under) if under else (f"{self.prefix}/" if self.prefix else "")
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, PaginationConfig={"MaxItems": limit}
            )
            cut = len(self.prefix) + 1 if self.prefix else 0
            for page in pages:
                for item in page.get("Contents", []):
                    found[item["Key"][cut:]] = item["Size"]
            return found

        return self._call(under or ".", walk)

    def delete(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):  # the most one request deletes
            batch = {"Objects": [{"Key": self.key(n)} for n in names[start : start + 1000]]}
            self._call(
                names[start], lambda c, b=batch: c.delete_objects(Bucket=self.bucket, Delete=b)
            )

    def _at(self, name: str) -> dict:
        return {"Bucket": self.bucket, "Key": self.key(name)}

    def client(self):
        """The boto3 client of this process (a client does not survive a fork)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                import boto3
                from botocore.config import Config

                config = Config(
                    retries={"total_max_attempts": 1},  # retried here, as one policy
                    connect_timeout=5,
                    read_timeout=60,
                    max_pool_connections=32,
                )
                session = boto3.session.Session(botocore_session=_botocore_session())
                if session.get_credentials() is None and self._handed is not None:
                    # A worker started before the credentials were set (a forkserver keeps
                    # the environment of its start): those its parent resolved serve.
                    session = boto3.session.Session(
                        **self._handed, botocore_session=_botocore_session()
                    )
                self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
                self._pid = os.getpid()
            return self._client

    def _call(self, name: str, action: Callable[[object], T]) -> T:
        """Run `action(client)`; retry transient errors by the policy, raise the others
        as one sentence naming the object."""
        delays = self.retry.delays()
        for attempt in range(len(delays) + 1):
            try:
                return action(self.client())
            except DatasetError:
                raise
            except Exception as exc:
                reason = _permanent(exc)
                if reason is not None:
                    raise DatasetError(f"{self.object_url(name)}: {reason}") from exc
                if attempt == len(delays):
                    raise DatasetError(
                        f"{self.object_url(name)}: the object store did not answer after "
                        f"{attempt + 1} tries ({_describe(exc)})"
                    ) from exc
                # one line when a request starts failing; its further retries only
                # when asked for (an outage would otherwise print one per retry and fetch)
                _log.log(
                    logging.WARNING if attempt == 0 else logging.DEBUG,
                    "%s: %s; retry %d of %d",
                    self.object_url(name),
                    _describe(exc),
                    attempt + 1,
                    len(delays),
                )
                time.sleep(delays[attempt] * random.uniform(0.5, 1.0))  # noqa: S311
        raise AssertionError("unreachable")

    def handed(self) -> dict | None:
        """The credentials this process would use, for a worker process to adopt."""
        return self._handed or _resolved()

    def adopt(self, credentials: dict | None) -> None:
        """Use `credentials` when this process finds none of its own."""
        self._handed = credentials or self._handed
        self._client = None

    def __getstate__(self) -> dict:  # a client and a lock do not cross into other processes
        state = {**self.__dict__, "_client": None, "_pid": 0, "_lock": None}
        return {**state, "_handed": self.handed()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint_url={self.endpoint_url!r})"


@functools.cache
def _service_loader():
    """This process's loader of S3's service model (made twice by racing threads at
    worst, which is harmless)."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def _botocore_session():
    """A fresh botocore session (it reads the credentials as they are now) sharing this
    process's loader of S3's service model: a client made without it spends most of a
    dataset's open parsing the model's JSON again."""
    import botocore.session

    session = botocore.session.get_session()
    session.register_component("data_loader", _service_loader())
    return session


def _resolved() -> dict | None:
    """This process's AWS credentials and region, to hand to a worker process that was
    started before they were set; None when there are none."""
    import boto3

    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    return {
        "aws_access_key_id": frozen.access_key,
        "aws_secret_access_key": frozen.secret_key,
        "aws_session_token": frozen.token,
        "region_name": session.region_name,
    }


def _code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _is_wrapped(exc: Exception) -> bool:
    return type(exc).__name__ == "S3UploadFailedError" and exc.__context__ is not None


def _permanent(exc: Exception) -> str | None:
    """Why `exc` will not go away by retrying, or None when it may (transient)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
        ResponseStreamingError,
    )

    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials were found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        )
    if isinstance(
        exc, ConnectionError | HTTPClientError | IncompleteReadError | ResponseStreamingError
    ):
        return None
    if isinstance(exc, ClientError):
        code, status = _code(exc), _status(exc)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return None
        if code in _MISSING_CODES:
            return "no such object"
        if code == "NoSuchBucket":
            return "no such bucket"
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return f"access denied ({code}); check the AWS credentials and the bucket policy"
        return f"the object store refused the request ({code}: {exc})"
    from urllib3.exceptions import HTTPError

    if isinstance(exc, OSError | HTTPError):  # a connection cut while the body was read
        return None
    return f"{type(exc).__name__}: {exc}"


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")
