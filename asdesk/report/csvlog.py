"""The screening CSV log: one row per analysed image (or per failure), crash-safe and resumable.

``asdesk screen`` and the GUI's "screen folder" append one row per image as soon as it is done and
flush + ``os.fsync`` it, so a crash or power cut loses at most the row being written. A later run reads
:meth:`ScreeningCsv.completed` and skips what is already there.

Format: UTF-8 (no BOM), comma-separated, ``\\n`` line ends, a header row with :data:`SCREENING_COLUMNS`,
written by the :mod:`csv` module (fields with commas or quotes are quoted). Every row names the model pack
id, version and SHA-256 (IHE AI Results). No patient name is written; ``patient_id`` is.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from datetime import datetime
from pathlib import Path
from types import TracebackType

from asdesk.core import AnalysisResult, ModelInfo

__all__ = ["SCREENING_COLUMNS", "ScreeningCsv"]

SCREENING_COLUMNS: tuple[str, ...] = (
    "file", "frame", "patient_id", "study_uid", "series_uid", "modality", "model_id", "model_version",
    "model_sha256", "probability", "threshold", "operating_point", "finding", "error", "timestamp",
)
"""Columns of the screening CSV, in order. ``timestamp`` is ISO 8601 local time with UTC offset."""

_HEADER_LINE = ",".join(SCREENING_COLUMNS) + "\n"


def _report_write_error(path: Path, reason: str) -> Exception:
    from asdesk.report import ReportWriteError  # the package defines it before importing this module

    return ReportWriteError(path, reason)


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _one_line(text: str) -> str:
    """Keep a free-text field on one physical line, so a crash can only truncate the last line."""
    return " ".join(str(text).splitlines()).strip()


class ScreeningCsv:
    """Append-only, crash-safe screening log.

    Opening creates the file (with the header) if it does not exist or is empty, and otherwise appends
    to it after checking its header. If the file ends in the middle of a line (a crash while a row was
    written), a line end is added first, so the broken fragment stays on its own line, which
    :meth:`completed` and :meth:`read_rows` ignore, and new rows start cleanly.

    Each :meth:`write_result` / :meth:`write_error` call appends exactly one row, then flushes and
    ``os.fsync``\\ s the file. The methods are thread-safe. Use as a context manager or call
    :meth:`close`.

    Parameters
    ----------
    path : str or Path
        The CSV file. Its folder must exist.

    Raises
    ------
    asdesk.report.ReportWriteError
        (an ``OSError`` and ``AsdeskError``) if the file cannot be opened or written, or if it exists and
        is not a screening CSV with these columns.

    Examples
    --------
    >>> done = ScreeningCsv.completed("screen.csv")                          # doctest: +SKIP
    >>> with ScreeningCsv("screen.csv") as log:                               # doctest: +SKIP
    ...     for path in files:
    ...         if ScreeningCsv.key(path, None) in done:
    ...             continue
    ...         log.write_result(analyze_image(path, ...))
    """

    columns: tuple[str, ...] = SCREENING_COLUMNS

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: io.TextIOWrapper | None = None
        try:
            self._prepare_existing_file()
            self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - kept open
        except OSError as error:
            raise _report_write_error(self.path, f"cannot open the screening CSV for appending "
                                                 f"({error.strerror or error}); check that the folder "
                                                 "exists and is writable") from error
        self._writer = csv.writer(self._file, lineterminator="\n")
        if self._file.tell() == 0:
            self._append(list(self.columns))

    def _prepare_existing_file(self) -> None:
        """Check the header of an existing file and terminate a truncated last line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as existing:
            first_line = existing.readline()
            existing.seek(-1, os.SEEK_END)
            last_byte = existing.read(1)
        text = first_line.decode("utf-8", errors="replace").lstrip("\ufeff")
        if not first_line.endswith(b"\n") and _HEADER_LINE.startswith(text):
            # A crash while the header itself was written: start the file again.
            with open(self.path, "wb") as restart:
                restart.flush()
                os.fsync(restart.fileno())
            return
        header = next(csv.reader([text]), [])
        if tuple(header) != self.columns:
            raise _report_write_error(
                self.path, "exists but is not an asdesk screening CSV with columns "
                f"{', '.join(self.columns)} (its first line is {text.strip()[:120]!r}); "
                "choose another file name")
        if last_byte != b"\n":
            with open(self.path, "ab") as terminate:
                terminate.write(b"\n")
                terminate.flush()
                os.fsync(terminate.fileno())

    def _append(self, row: list[str]) -> None:
        with self._lock:
            if self._file is None:
                raise _report_write_error(self.path, "the screening CSV is closed")
            try:
                self._writer.writerow(row)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as error:
                reason = f"cannot append to the screening CSV ({error.strerror or error}); is the disk full?"
                raise _report_write_error(self.path, reason) from error

    @staticmethod
    def key(path: str | os.PathLike[str], frame: int | str | None) -> tuple[str, str]:
        """The (file, frame) key of a row, as :meth:`completed` returns it.

        Parameters
        ----------
        path : str or path-like
            The image file. Stored as an absolute path (``os.path.abspath``; symlinks are not resolved).
        frame : int, str or None
            0-based frame of a multi-frame file; ``None`` (or ``""``) for a single-frame image.

        Returns
        -------
        tuple of (str, str)
            ``(absolute path, "")`` or ``(absolute path, "<frame>")``.
        """
        frame_text = "" if frame is None or frame == "" else str(int(frame))
        return (os.path.abspath(os.fspath(path)), frame_text)

    def write_result(self, result: AnalysisResult) -> None:
        """Append one row for a successfully analysed image and force it to disk.

        Parameters
        ----------
        result : AnalysisResult
            File, frame and DICOM identifiers come from ``result.record.metadata``; probability and
            threshold are written with 6 decimals. A refused image (``result.refused``) gets no probability,
            the finding ``refused`` and the reason in the ``error`` column; an overridden refusal is marked
            ``[outside validated use]`` beside its finding.
        """
        meta = result.record.metadata
        prediction = result.prediction
        file_name, frame = self.key(meta.source, meta.frame_index)
        if result.refused:  # outside what the model was validated for: no probability, no finding
            probability, finding, note = "", "refused", _one_line(result.gate.text(result.model.pack_id))
        else:
            probability, finding, note = f"{float(prediction.probability):.6f}", prediction.finding, ""
            if result.gate.overridden:
                finding += " [outside validated use]"
                note = _one_line(result.gate.text(result.model.pack_id))
        self._append([
            file_name, frame, meta.patient_id, meta.study_uid, meta.series_uid, meta.modality,
            result.model.pack_id, result.model.version, result.model.sha256,
            probability, f"{float(prediction.threshold):.6f}",
            prediction.operating_point, finding, note, _now_iso(),
        ])

    def write_error(self, path: str | os.PathLike[str], frame: int | None, error_message: str,
                    model: ModelInfo | None) -> None:
        """Append one row for an image that could not be analysed and force it to disk.

        Parameters
        ----------
        path : str or path-like
            The image file.
        frame : int or None
            0-based frame of a multi-frame file, ``None`` otherwise.
        error_message : str
            What went wrong (line breaks are replaced by spaces).
        model : ModelInfo or None
            The model that would have analysed it (its id, version and hash are written), or ``None``.
        """
        file_name, frame_text = self.key(path, frame)
        model_fields = ["", "", ""] if model is None else [model.pack_id, model.version, model.sha256]
        self._append([file_name, frame_text, "", "", "", "", *model_fields, "", "", "", "",
                      _one_line(error_message) or "unknown error", _now_iso()])

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> ScreeningCsv:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()

    @classmethod
    def read_rows(cls, path: str | Path) -> list[dict[str, str]]:
        """Read the complete, valid rows of a screening CSV.

        Skipped: a last line without a line end (truncated by a crash), rows with the wrong number of
        fields, rows without a file name and rows whose timestamp is not ISO 8601 (all signs of a
        fragment left by a crash).

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        list of dict
            One ``{column: value}`` dict per row, in file order; empty if the file does not exist.

        Raises
        ------
        asdesk.report.ReportWriteError
            If the file exists but its header is not :data:`SCREENING_COLUMNS`.
        """
        path = Path(path)
        if not path.exists():
            return []
        text = path.read_text(encoding="utf-8", errors="replace").lstrip("\ufeff")
        if not text:
            return []
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        records = list(csv.reader(io.StringIO(complete, newline="")))
        if not records:
            return []
        if tuple(records[0]) != cls.columns:
            raise _report_write_error(path, f"is not an asdesk screening CSV (header {records[0][:4]}...)")
        return [dict(zip(cls.columns, record, strict=True)) for record in records[1:]
                if cls._valid(record)]

    @classmethod
    def _valid(cls, record: list[str]) -> bool:
        if len(record) != len(cls.columns) or not record[0]:
            return False
        try:
            datetime.fromisoformat(record[-1])
        except ValueError:
            return False
        return True

    @classmethod
    def completed(cls, path: str | Path, include_errors: bool = True) -> set[tuple[str, str]]:
        """The (file, frame) keys already in a screening CSV, to skip them when resuming.

        A row with an error counts as done by default, so that a resumed run does not retry files that
        cannot be read; a ``--retry-errors`` caller passes ``include_errors=False`` and gets only the
        keys with a successful row (a key that failed once and succeeded later is included).

        Parameters
        ----------
        path : str or Path
            The CSV; a missing file gives an empty set.
        include_errors : bool
            Count error rows as done.

        Returns
        -------
        set of tuple (str, str)
            Keys as made by :meth:`key`: (absolute file path, frame or ``""``).
        """
        succeeded: set[tuple[str, str]] = set()
        failed: set[tuple[str, str]] = set()
        for row in cls.read_rows(path):
            key = (row["file"], row["frame"])
            (failed if row["error"] else succeeded).add(key)
        return succeeded | failed if include_errors else succeeded
