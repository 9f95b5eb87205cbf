"""Where asdesk keeps its files: bundled resources and models, the user's model packs, config and logs.

Per-user directories come from platformdirs and can be redirected (tests, portable installs) with the
``ASDESK_HOME`` environment variable, under which ``data/``, ``config/`` and ``logs/`` are used.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "asdesk"


def _home_override() -> Path | None:
    value = os.environ.get("ASDESK_HOME")
    return Path(value) if value else None


def install_root() -> Path:
    """The folder holding ``models/`` and ``resources/``.

    In a source checkout this is the repository root; in a PyInstaller bundle it is ``sys._MEIPASS`` (the
    one-folder bundle's ``_internal`` folder, or the one-file bundle's unpack folder); in a program frozen by
    another tool (``sys.frozen`` set, no ``sys._MEIPASS``) it is the folder of the executable.
    """
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen)
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve().parent
    return Path(__file__).resolve().parents[2]


def bundled_models_dir() -> Path:
    """The model packs shipped with asdesk (``<install root>/models``)."""
    return install_root() / "models"


def resources_dir() -> Path:
    """Icons, the bundled sample image and licences (``<install root>/resources``)."""
    return install_root() / "resources"


def user_data_dir() -> Path:
    """The user's data directory (platformdirs), holding user model packs under ``models/``."""
    override = _home_override()
    if override:
        return override / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def user_models_dir() -> Path:
    """Model packs a user installed or trained (``<user data>/models``)."""
    return user_data_dir() / "models"


def user_config_dir() -> Path:
    """Where the settings file lives (platformdirs config directory)."""
    override = _home_override()
    if override:
        return override / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def user_log_dir() -> Path:
    """Where the rotating log file lives (platformdirs log directory)."""
    override = _home_override()
    if override:
        return override / "logs"
    import platformdirs

    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))
