"""Logging set-up: a rotating file in the platformdirs log directory, plus stderr for the CLI.

No patient-identifying data is ever logged: log file names and results, never patient names or ids.
"""

from __future__ import annotations

import logging
import logging.handlers
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
