"""User settings: a typed object saved as JSON under the platformdirs config directory.

The workstation remembers the folders last used, the default model, the Grad-CAM overlay opacity, the
operating point and the recently opened files. Settings live in ``<user config dir>/settings.json``
(:func:`asdesk.core.paths.user_config_dir`, which tests redirect with ``ASDESK_HOME``).

A missing, unreadable or partly invalid file never stops the program: unknown keys are ignored and values of
the wrong type fall back to their defaults (and a warning is logged). Only the standard library is used.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from asdesk.core.paths import user_config_dir

LOGGER = logging.getLogger(__name__)

SETTINGS_FILE_NAME = "settings.json"
SETTINGS_SCHEMA_VERSION = 1
OPERATING_POINT_NAMES = ("high_sensitivity", "balanced", "high_specificity")


def settings_path() -> Path:
    """The settings file, ``<user config dir>/settings.json``."""
    return user_config_dir() / SETTINGS_FILE_NAME


@dataclass
class Settings:
    """What the workstation remembers between sessions.

    Attributes
    ----------
    last_open_folder : str
        Folder of the last "Open file(s)…" dialog.
    last_dicom_folder : str
        Folder last chosen in "Open DICOM folder…".
    last_screen_folder : str
        Folder last screened.
    last_export_folder : str
        Where the last report or CSV was exported.
    default_model : str
        Pack id used for analysis; empty means "choose by modality and body part".
    overlay_opacity : float
        Grad-CAM overlay opacity in [0, 1].
    overlay_visible : bool
        Whether the Grad-CAM overlay is shown.
    operating_point : str
        ``"high_sensitivity"``, ``"balanced"``, ``"high_specificity"``, or empty for the card's default.
    recent_files : list of str
        Recently opened files and series folders, most recent first.
    max_recent : int
        How many recent entries are kept (>= 1).
    window_state : str
        Opaque GUI layout state (hex), restored by the window.
    reader_name : str
        The reader's name recorded with every reader decision (asked once, then kept).
    schema_version : int
        Version of this file's layout.
    """

    last_open_folder: str = ""
    last_dicom_folder: str = ""
    last_screen_folder: str = ""
    last_export_folder: str = ""
    default_model: str = ""
    overlay_opacity: float = 0.45
    overlay_visible: bool = True
    operating_point: str = ""
    recent_files: list[str] = field(default_factory=list)
    max_recent: int = 10
    window_state: str = ""
    reader_name: str = ""
    schema_version: int = SETTINGS_SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.overlay_opacity = min(1.0, max(0.0, float(self.overlay_opacity)))
        self.max_recent = max(1, int(self.max_recent))
        if self.operating_point not in ("", *OPERATING_POINT_NAMES):
            self.operating_point = ""
        self.recent_files = [str(item) for item in self.recent_files][: self.max_recent]

    def add_recent(self, path: str | Path) -> None:
        """Put ``path`` first in :attr:`recent_files` (no duplicates, at most :attr:`max_recent`).

        Parameters
        ----------
        path : str or Path
            A file or series folder that was opened.
        """
        text = str(Path(path))
        items = [text] + [item for item in self.recent_files if item != text]
        self.recent_files = items[: self.max_recent]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Build settings from a decoded JSON object, keeping only known keys of the right type.

        Parameters
        ----------
        data : dict
            Decoded ``settings.json``.

        Returns
        -------
        Settings
            Invalid or unknown entries are dropped (defaults used) and logged at WARNING.
        """
        defaults = cls()
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in data:
                continue
            value = data[spec.name]
            default = getattr(defaults, spec.name)
            if isinstance(default, bool):
                valid = isinstance(value, bool)
            elif isinstance(default, float):
                valid = isinstance(value, int | float) and not isinstance(value, bool)
            elif isinstance(default, int):
                valid = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, list):
                valid = isinstance(value, list) and all(isinstance(item, str) for item in value)
            else:
                valid = isinstance(value, str)
            if valid:
                values[spec.name] = value
            else:
                LOGGER.warning("settings: ignoring %s=%r (expected %s)", spec.name, value,
                               type(default).__name__)
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Settings:
        """Read settings from ``path`` (default :func:`settings_path`).

        Parameters
        ----------
        path : str or Path, optional
            The JSON file.

        Returns
        -------
        Settings
            Defaults when the file is missing, unreadable or not a JSON object.
        """
        file = Path(path) if path is not None else settings_path()
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            LOGGER.warning("settings: %s is unreadable (%s); using defaults", file, error)
            return cls()
        if not isinstance(data, dict):
            LOGGER.warning("settings: %s is not a JSON object; using defaults", file)
            return cls()
        return cls.from_dict(data)

    def save(self, path: str | Path | None = None) -> Path:
        """Write the settings atomically (temporary file, then rename).

        Parameters
        ----------
        path : str or Path, optional
            The JSON file; default :func:`settings_path`. Parent folders are created.

        Returns
        -------
        Path
            The file written.

        Raises
        ------
        OSError
            If the config directory cannot be written.
        """
        file = Path(path) if path is not None else settings_path()
        file.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=file.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(self.to_dict(), stream, indent=2, sort_keys=True)
                stream.write("\n")
            os.replace(temporary, file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return file
