"""The ``hvdtrain`` logger: every diagnostic hvdtrain writes (a note, a warning, debug detail)
goes through this one logger, in the launcher and in the ranks.

Why a logger and not ``print`` to stderr: what a user sees then has one switch. The CLI alone
installs the stderr handler (``configure_cli``), with the ``hvdtrain: `` prefix as its whole
format, so at the default level the output is what the prints wrote; ``-v`` adds debug detail,
``-q`` keeps warnings and errors only. A program that calls the library decides for itself:
importing hvdtrain configures no handler (a ``NullHandler`` only, so Python's last-resort
handler does not print bare warnings), and the records propagate to its own logging setup.

Not diagnostics, so not logged: a command's results (plans, tables, JSON, a rank's epoch lines,
on stdout) and the final error report (the failure report and the one-line error with its
hint and exit code), which is shown whatever the level.

A rank is started as ``python -m hvdtrain ...`` by a launcher that may pass no flags:
``rank_environment`` gives it the launcher's level in ``LEVEL_ENV``, which ``configure_cli``
reads when no flag chose one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

NAME = "hvdtrain"
FORMAT = "hvdtrain: %(message)s"
# The level the launcher chose, for the ranks (a protocol variable, see launch.protocol: not
# ``HVDTRAIN_LOG_LEVEL``, which is the mirror of ``--log-level``, Horovod's own log level).
LEVEL_ENV = "HVDTRAIN_RANK_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

logger = logging.getLogger(NAME)
logger.addHandler(logging.NullHandler())


class _CurrentStderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record (a test's capture, a stream that was
    replaced after the handler was made), never to the one it was created with."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


_cli_handler: logging.Handler | None = None


def level_from(verbose: bool = False, quiet: bool = False,
               env: Mapping[str, str] | None = None) -> int:
    """``-v``: DEBUG; ``-q``: WARNING; neither: the launcher's ``LEVEL_ENV``, else INFO."""
    if verbose:
        return logging.DEBUG
    if quiet:
        return logging.WARNING
    env = os.environ if env is None else env
    name = env.get(LEVEL_ENV, "").strip().upper()
    return logging.getLevelName(name) if name in LEVELS else logging.INFO


def configure_cli(level: int) -> None:
    """The ``hvdtrain`` command's setup (only the CLI calls it): one stderr handler with the
    ``hvdtrain: `` format, at ``level``. Idempotent: a second command in the same process
    (a test's runner) reuses the handler. The records stop here: a root handler that a
    framework installs (absl's) would print them twice."""
    global _cli_handler
    if _cli_handler is None:
        _cli_handler = _CurrentStderr()
        _cli_handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(_cli_handler)
    logger.setLevel(level)
    logger.propagate = False


def rank_environment() -> dict[str, str]:
    """``LEVEL_ENV`` for the processes a launch starts, when this process's level is not the
    default (so a default launch, and what ``plan``/``--dry-run`` show of it, is unchanged)."""
    level = logger.level
    if level in (logging.NOTSET, logging.INFO):
        return {}
    return {LEVEL_ENV: logging.getLevelName(level)}
