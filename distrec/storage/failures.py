"""Storage failures become ``DataError``s that name the object, say what was being done, and
never carry a credential.

Transient faults (dropped connections, 500/503, throttling) are retried with backoff by the S3
client (see uri.py); what reaches this module has outlived those retries, or is not transient
(access denied, no such bucket, disk full). Jobs turn a DataError into a one-paragraph message
and exit code 2 instead of a traceback through s3fs, aiobotocore and pyarrow.

    with storage_errors(uri, "write"):
        fs.pipe_file(path, data)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from distrec.errors import DataError

__all__ = ["STORAGE_ERRORS", "storage_errors", "storage_error", "redact"]


def _client_errors() -> tuple[type[BaseException], ...]:
    """The S3 client's own exception bases (s3fs translates most, not all, into OSError)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no S3 support installed: local files only
        return ()
    return (BotoCoreError, ClientError)


STORAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, *_client_errors())

# Environment variables whose values must never appear in a message.
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|CREDENTIAL|SESSION", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the value of every secret-looking environment variable replaced by ``***``."""
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    return text


def storage_error(uri: str, action: str, error: BaseException) -> DataError:
    """A DataError for a failed ``action`` ("read", "write", "list", ...) on ``uri``."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, FileNotFoundError):
        hint = "no such object, or its bucket does not exist"
    elif isinstance(error, PermissionError):
        hint = "access denied: check the credentials or the role's permissions"
    elif uri.startswith(("s3://", "s3a://")):
        from distrec.storage.uri import S3FS_ROUNDS, s3_attempts  # uri.py imports this module

        hint = (
            f"the object store kept failing through {S3FS_ROUNDS} rounds of {s3_attempts()} attempts with backoff "
            "(DISTREC_S3_MAX_ATTEMPTS); check the endpoint and the store's health, then re-run"
        )
    else:
        hint = "check the path, the free space and the permissions, then re-run"
    return DataError(redact(f"{uri}: cannot {action} ({type(error).__name__}: {reason}); {hint}"))


@contextmanager
def storage_errors(uri: str, action: str) -> Iterator[None]:
    """Re-raise storage failures inside the block as DataErrors naming ``uri``."""
    try:
        yield
    except DataError:
        raise
    except STORAGE_ERRORS as e:
        raise storage_error(uri, action, e) from None
