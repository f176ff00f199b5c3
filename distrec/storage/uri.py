"""Every path in distrec is an fsspec URI: ``/local/path``, ``file://``, ``s3://bucket/prefix``, ``memory://``.

S3 endpoint and credentials come from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, profiles, instance roles); nothing is hard-coded.
Requests to object storage are retried with exponential backoff by botocore's ``standard`` mode
(``DISTREC_S3_MAX_ATTEMPTS`` attempts, default 8) so a flaky store does not fail a job. s3fs
re-issues a request once more when botocore gives up or the answer's body breaks off mid-read
(which botocore cannot retry); s3fs's default of 5 rounds of botocore's attempts would make a
store that is down take minutes to report.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

import fsspec
from fsspec.core import split_protocol, url_to_fs

from distrec.storage.failures import storage_errors

__all__ = ["filesystem", "join", "is_local", "absolute", "overlaps", "storage_options", "write_text", "read_text", "s3_attempts"]

S3FS_ROUNDS = 2


def storage_options(uri: str) -> dict[str, Any]:
    """Options for the filesystem that serves ``uri`` (only S3 needs any)."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    attempts = s3_attempts()
    options: dict[str, Any] = {
        # botocore's standard retry mode backs off exponentially on throttling, 5xx and dropped
        # connections.
        "config_kwargs": {
            "retries": {"max_attempts": attempts, "mode": "standard"},
            "connect_timeout": 10,
            "read_timeout": 60,
        },
        # A listing cached from before a writer finished would hide its manifest.
        "use_listings_cache": False,
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def s3_attempts() -> int:
    """botocore's attempts per S3 request (``DISTREC_S3_MAX_ATTEMPTS``, default 8)."""
    return int(os.environ.get("DISTREC_S3_MAX_ATTEMPTS", "8"))


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem serving ``uri`` and the path inside it (fresh instance, no stale caches)."""
    fs, path = url_to_fs(uri, skip_instance_cache=True, **storage_options(uri))
    if hasattr(fs, "retries"):  # s3fs: rounds of botocore's attempts
        fs.retries = S3FS_ROUNDS
    return fs, path.rstrip("/") or path


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI without touching its scheme (``s3://b/x`` + ``y`` → ``s3://b/x/y``)."""
    return posixpath.join(uri.rstrip("/"), *parts)


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def absolute(uri: str) -> str:
    """A relative local path made absolute (Ray workers run in other directories); URIs unchanged."""
    return os.path.abspath(uri) if "://" not in uri else uri


def _location(uri: str) -> tuple[str, str]:
    """Where ``uri`` points, as (protocol, absolute normalised path): local paths resolved
    (``file://``, ``~``, ``..``, symlinks), other URIs by their filesystem's own rules
    (``s3a://b/x/`` and ``s3://b/x`` are one place)."""
    if is_local(uri):
        return "file", os.path.realpath(os.path.expanduser(uri.removeprefix("file://")))
    protocol, rest = split_protocol(uri)
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError):  # an unknown scheme: whoever opens it reports that
        return str(protocol), posixpath.normpath("/" + str(rest).strip("/"))
    canonical = cls.protocol if isinstance(cls.protocol, str) else cls.protocol[0]
    return canonical, posixpath.normpath("/" + cls._strip_protocol(uri).strip("/"))


def overlaps(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are the same place, or one lies inside the other."""
    (protocol_a, path_a), (protocol_b, path_b) = _location(a), _location(b)
    return protocol_a == protocol_b and (_within(path_a, path_b) or _within(path_b, path_a))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def write_text(uri: str, text: str) -> None:
    """Write a small text file (a report, metrics.json) in one request."""
    fs, path = filesystem(uri)
    with storage_errors(uri, "write"):
        parent = posixpath.dirname(path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, text.encode())


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with storage_errors(uri, "read"):
        return fs.cat_file(path).decode()
