"""Logging set-up: a rotating file in the platformdirs log directory, plus stderr for the CLI.

No patient-identifying data is ever logged: log file names and results, never patient names or ids.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from asdesk.core.paths import user_log_dir

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, console: bool = False, log_dir: Path | None = None) -> Path:
    """Attach a rotating file handler (1 MB x 5) to the ``asdesk`` logger.

    Parameters
    ----------
    level : int
        Logging level of the ``asdesk`` logger.
    console : bool
        Also log WARNING and above to stderr.
    log_dir : Path, optional
        Defaults to :func:`asdesk.core.paths.user_log_dir`.

    Returns
    -------
    Path
        The log file.
    """
    directory = log_dir or user_log_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log_file = directory / "asdesk.log"
    logger = logging.getLogger("asdesk")
    logger.setLevel(level)
    if not any(getattr(h, "_asdesk", False) for h in logger.handlers):
        handler = logging.handlers.RotatingFileHandler(log_file, maxBytes=1_000_000, backupCount=5,
                                                       encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._asdesk = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        if console:
            stream = logging.StreamHandler()
            stream.setLevel(logging.WARNING)
            stream.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
            stream._asdesk = True  # type: ignore[attr-defined]
            logger.addHandler(stream)
    return log_file


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to the null device for a moment (TensorFlow's C++ start-up chatter).

    Python-level errors are unaffected: they are raised, not printed, inside the block.

    Parameters
    ----------
    enabled : bool
        False leaves stderr alone (``--debug``).
    """
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (a GUI launcher, a test capture): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
