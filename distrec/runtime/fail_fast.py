"""Worker errors that a retry cannot fix end a Ray Train run at once.

Ray Train V2 (2.60) retries every worker-group error up to ``FailureConfig.max_failures``
(``DefaultFailurePolicy``; the policy is not pluggable). A restart helps a killed worker or a
lost node, but not bad input: a config value, a missing or corrupt shard (``UserError``,
``ConfigError``, ``DataError``) fails the same way on every attempt, after minutes of startup
each. ``FailFast`` sees the workers' errors first (``after_exception`` runs while the
controller polls the workers, before the failure policy decides) and, when one is of those
kinds, raises it wrapped in a ``ControllerError``: the controller hands an error raised in its
loop to the policy, which retries no ControllerError but a worker-group startup failure, so
the run shuts down after this attempt. The driver gets the worker's own exception back from
``worker_error``.
"""

from __future__ import annotations

from typing import Any

from ray.train.v2.api.callback import UserCallback
from ray.train.v2.api.exceptions import ControllerError

from distrec.config import ConfigError
from distrec.errors import DataError, UserError

__all__ = ["PERMANENT_ERRORS", "FailFast", "worker_error"]

PERMANENT_ERRORS = (UserError, ConfigError, DataError)


class PermanentWorkerError(ControllerError):
    """Ends a run from the controller; ``controller_failure`` is the worker's own error."""


class FailFast(UserCallback):
    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        permanent = [e for _, e in sorted(worker_exceptions.items()) if isinstance(e, PERMANENT_ERRORS)]
        if permanent:
            raise PermanentWorkerError(permanent[0])


def worker_error(error: BaseException) -> BaseException | None:
    """The worker's own exception if ``error`` (from ``trainer.fit()``) ended the run through ``FailFast``."""
    return error.controller_failure if isinstance(error, PermanentWorkerError) else None
