"""What every job script shares: argument parsing of ``--config FILE key=value ...``, the error
boundary (a clear one-paragraph message and exit code 2, no traceback, for the mistakes a user
can fix), and the final one-line JSON summary."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from distrec.config import ConfigError
from distrec.console import quiet as quiet_env
from distrec.console import set_quiet
from distrec.errors import DataError, UserError

__all__ = ["job_parser", "run_job"]


def job_parser(description: str, *, example: str = "output_dir=runs/try") -> argparse.ArgumentParser:
    """``--config FILE``, ``key=value`` overrides (``example`` shows one in --help), ``--quiet``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help=f"dotted keys of the config, overriding its YAML, e.g. {example}"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars, warnings only (as DISTREC_QUIET=1); in a log file bars are off anyway",
    )
    return parser


def run_job(
    main: Callable[[], dict[str, Any]], *, quiet: bool = False, describe: Callable[[dict[str, Any]], str] | None = None
) -> int:
    """Run a job body; print ``describe(summary)`` for people, then the summary as the last line
    (JSON), and map the errors a user can fix to exit code 2 with a one-paragraph message."""
    if quiet:
        set_quiet(True)  # without --quiet, a DISTREC_QUIET the user exported stays in force
    logging.basicConfig(level=logging.WARNING if quiet_env() else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = main()
    except (DataError, ConfigError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    text = describe(summary) if describe is not None else ""
    if text:
        print(text, flush=True)
    print(json.dumps(summary, default=str), flush=True)
    return 0
