"""The screening CSV log: one row per analysed image (or per failure), crash-safe and resumable.

``asdesk screen`` and the GUI's "screen folder" append one row per image as soon as it is done and flush it
to the operating system at once, so a crash of asdesk (a decoder that kills the process included) loses no
written row. The file is ``os.fsync``\\ ed after every row by default, or once per batch of rows when the
writer asks for it (screening does: one ``fsync`` per batch instead of one per image, a group commit), so a
power cut loses at most the rows of the batch being written, which a resumed screening analyses again (a
torn last line is cut off when the file is opened again). A later run reads :meth:`ScreeningCsv.completed` and
skips what is already there. One process at a time writes a CSV: an advisory lock on ``.<name>.lock`` beside it
(``fcntl.flock`` / ``msvcrt.locking``) makes a second writer stop with :class:`CsvLockedError`.

Format: UTF-8 (no BOM), comma-separated, ``\\n`` line ends, a header row with :data:`SCREENING_COLUMNS`,
written by the :mod:`csv` module (fields with commas or quotes are quoted). Every row names the model pack
id, version and SHA-256 (IHE AI Results). No patient name is written; ``patient_id`` is. ``row_kind`` is
``image`` (one file or frame) or ``study`` (a series, by the card's study rule); ``status`` is ``result``,
``error`` or ``skipped`` (a file that holds no image; the reason is in ``error``). Files written by asdesk
before these two columns existed (:data:`LEGACY_COLUMNS`) are still read and appended to in their format.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import TracebackType

from asdesk.core import AnalysisResult, ModelInfo
from asdesk.report import ReportWriteError  # defined by the package before it imports this module

__all__ = ["LEGACY_COLUMNS", "SCREENING_COLUMNS", "CsvLockedError", "ScreeningCsv"]

SCREENING_COLUMNS: tuple[str, ...] = (
    "file", "frame", "row_kind", "status", "patient_id", "study_uid", "series_uid", "modality", "model_id",
    "model_version", "model_sha256", "probability", "model_output", "threshold", "operating_point", "finding",
    "error", "timestamp",
)
"""Columns of the screening CSV, in order. ``probability`` is what the window and the reports show (calibrated
when the model card has a calibration; empty for a refused image), ``model_output`` the model's raw output (what
the card's thresholds and study rule apply to). ``timestamp`` is ISO 8601 local time with UTC offset."""

LEGACY_COLUMNS: tuple[str, ...] = tuple(c for c in SCREENING_COLUMNS
                                        if c not in ("row_kind", "status", "model_output"))
"""Columns of screening CSVs written before ``row_kind`` and ``status`` (image rows only)."""

_HEADER_LINE = ",".join(SCREENING_COLUMNS) + "\n"
_KNOWN_HEADERS = (SCREENING_COLUMNS, LEGACY_COLUMNS)


class CsvLockedError(ReportWriteError):
    """Another process (a second ``asdesk screen``, or the window) is writing the screening CSV.

    Parameters
    ----------
    path : str or Path
        The CSV.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(
            path, "another asdesk screening (a second 'asdesk screen' or the window) is writing this CSV now; "
            "wait for it to finish, or give another --csv file")


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _acquire(handle: io.BufferedRandom) -> bool:
    """Take an exclusive, non-blocking advisory lock on ``handle``; False if another process holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    except OSError as error:
        if error.errno in (11, 13, 35):  # EAGAIN / EACCES / EWOULDBLOCK (macOS)
            return False
        raise
    return True


def _release(handle: io.BufferedRandom) -> None:
    with contextlib.suppress(OSError):
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def _report_write_error(path: Path, reason: str) -> Exception:
    return ReportWriteError(path, reason)


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _one_line(text: str) -> str:
    """Keep a free-text field on one physical line, so a crash can only truncate the last line."""
    return " ".join(str(text).splitlines()).strip()


class ScreeningCsv:
    """Append-only, crash-safe screening log, written by one process at a time.

    Opening takes an advisory lock on ``.<name>.lock`` beside the CSV (held until :meth:`close`), creates
    the file (with the header) if it does not exist or is empty, and otherwise appends to it after
    checking its header. If the file ends in the middle of a line (a crash while a row was written), the
    fragment is cut off (it was never a complete row), so new rows start cleanly.

    Each ``write_*`` call appends exactly one row and flushes it to the operating system; with
    ``sync_each_row`` (the default) it also ``os.fsync``\\ s the file, otherwise :meth:`sync` does, for every
    row written since the last one (and :meth:`close`). The methods are thread-safe. Use as a context manager
    or call :meth:`close`.

    Parameters
    ----------
    path : str or Path
        The CSV file. Its folder must exist.
    sync_each_row : bool
        ``os.fsync`` after every row (a power cut loses at most the row being written). ``False``: the caller
        calls :meth:`sync` after each batch (a power cut loses at most that batch's rows; ``fsync`` can cost
        milliseconds on a busy or network disk, more than classifying an image).

    Raises
    ------
    CsvLockedError
        Another process has the CSV open for writing.
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

    def __init__(self, path: str | Path, sync_each_row: bool = True) -> None:
        self.path = Path(path)
        self.sync_each_row = bool(sync_each_row)
        self._unsynced = False
        self._lock = threading.Lock()
        self._file: io.TextIOWrapper | None = None
        self._lock_handle: io.BufferedRandom | None = None
        self.columns = SCREENING_COLUMNS
        try:
            self._lock_handle = open(_lock_path(self.path), "a+b")  # noqa: SIM115 - held until close()
            if not _acquire(self._lock_handle):
                _release(self._lock_handle)
                self._lock_handle = None
                raise CsvLockedError(self.path)
            self._prepare_existing_file()
            self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 - kept open
        except OSError as error:
            self._unlock()
            if isinstance(error, ReportWriteError):
                raise
            raise _report_write_error(self.path, f"cannot open the screening CSV for appending "
                                                 f"({error.strerror or error}); check that the folder "
                                                 "exists and is writable") from error
        except BaseException:
            self._unlock()
            raise
        self._writer = csv.writer(self._file, lineterminator="\n")
        if self._file.tell() == 0:
            self._append(list(self.columns))

    def _unlock(self) -> None:
        if self._lock_handle is not None:
            _release(self._lock_handle)
            self._lock_handle = None

    def _prepare_existing_file(self) -> None:
        """Check the header of an existing file and cut off a torn last line."""
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
        header = tuple(next(csv.reader([text]), []))
        if header not in _KNOWN_HEADERS:
            raise _report_write_error(
                self.path, "exists but is not an asdesk screening CSV with columns "
                f"{', '.join(SCREENING_COLUMNS)} (its first line is {text.strip()[:120]!r}); "
                "choose another file name")
        self.columns = header
        if last_byte != b"\n":
            self._cut_torn_line()

    def _cut_torn_line(self) -> None:
        """Truncate the file after its last complete line (a crash left a fragment of a row)."""
        with open(self.path, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            position = size
            block = 1 << 16
            keep = 0
            while position > 0:
                start = max(0, position - block)
                handle.seek(start)
                chunk = handle.read(position - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                position = start
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())

    def _append(self, row: list[str]) -> None:
        with self._lock:
            if self._file is None:
                raise _report_write_error(self.path, "the screening CSV is closed")
            try:
                self._writer.writerow(row)
                self._file.flush()
                if self.sync_each_row:
                    os.fsync(self._file.fileno())
                else:
                    self._unsynced = True
            except OSError as error:
                reason = f"cannot append to the screening CSV ({error.strerror or error}); is the disk full?"
                raise _report_write_error(self.path, reason) from error

    def _append_fields(self, fields: dict[str, str]) -> None:
        fields.setdefault("timestamp", _now_iso())
        self._append([fields.get(column, "") for column in self.columns])

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

    @staticmethod
    def _model_fields(model: ModelInfo | None) -> dict[str, str]:
        if model is None:
            return {}
        return {"model_id": model.pack_id, "model_version": model.version, "model_sha256": model.sha256}

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
            status, probability, finding = "refused", "", "refused"
            note = _one_line(result.gate.text(result.model.pack_id))
        else:
            status, finding, note = "result", prediction.finding, ""
            probability = f"{float(prediction.probability):.6f}"
            if result.gate.overridden:
                finding += " [outside validated use]"
                note = _one_line(result.gate.text(result.model.pack_id))
        self._append_fields({
            "file": file_name, "frame": frame, "row_kind": "image", "status": status,
            "patient_id": meta.patient_id, "study_uid": meta.study_uid, "series_uid": meta.series_uid,
            "modality": meta.modality, **self._model_fields(result.model),
            "probability": probability,
            "model_output": "" if prediction.raw_probability is None else f"{float(prediction.raw_probability):.6f}",
            "threshold": f"{float(prediction.threshold):.6f}",
            "operating_point": prediction.operating_point, "finding": finding, "error": note,
        })

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
        self._append_fields({
            "file": file_name, "frame": frame_text, "row_kind": "image", "status": "error",
            **self._model_fields(model), "error": _one_line(error_message) or "unknown error",
        })

    def write_skipped(self, path: str | os.PathLike[str], reason: str) -> None:
        """Append one row for a file that holds no image (``status`` ``skipped``) and force it to disk.

        Parameters
        ----------
        path : str or path-like
            The file.
        reason : str
            Why, e.g. ``"skipped: not an image (Basic Text SR Storage)"``; written in the ``error`` column
            (a legacy-format CSV gets it there too, which makes it an error row in that format).
        """
        file_name, frame_text = self.key(path, None)
        self._append_fields({"file": file_name, "frame": frame_text, "row_kind": "image", "status": "skipped",
                             "error": _one_line(reason) or "skipped"})

    def write_study(self, folder: str | os.PathLike[str], identifiers: dict[str, str], model: ModelInfo | None,
                    probability: float | None, threshold: float | None, operating_point: str, finding: str,
                    error_message: str = "") -> None:
        """Append one study-level row (``row_kind`` ``study``) for a series and force it to disk.

        Parameters
        ----------
        folder : str or path-like
            The folder holding the series (written in ``file``; ``frame`` stays empty).
        identifiers : dict of str to str
            ``patient_id``, ``study_uid``, ``series_uid``, ``modality`` (missing keys are left empty).
        model : ModelInfo or None
            The model whose slice results were combined (``None`` when no slice was scored).
        probability, threshold : float or None
            Study score and the study rule's threshold, in [0, 1]; ``None`` with ``error_message``.
        operating_point : str
            ``"study"`` for the card's study rule, else the slice operating point used.
        finding : str
            The study finding.
        error_message : str
            Why no study result could be made (e.g. every slice failed); empty for a result.

        Raises
        ------
        asdesk.report.ReportWriteError
            The CSV is in the legacy format (no ``row_kind`` column), or cannot be appended to.
        """
        if "row_kind" not in self.columns:
            raise _report_write_error(self.path, "this screening CSV was written by an older asdesk (no row_kind "
                                                 "column): study rows cannot be added to it")
        fields = {"file": os.path.abspath(os.fspath(folder)), "row_kind": "study",
                  "status": "error" if error_message else "result",
                  **{k: identifiers.get(k, "") for k in ("patient_id", "study_uid", "series_uid", "modality")},
                  **self._model_fields(model), "operating_point": operating_point, "finding": finding,
                  "error": _one_line(error_message)}
        if probability is not None:
            fields["probability"] = f"{float(probability):.6f}"
        if threshold is not None:
            fields["threshold"] = f"{float(threshold):.6f}"
        self._append_fields(fields)

    def sync(self) -> None:
        """``os.fsync`` the rows written since the last sync (a no-op when there are none).

        Raises
        ------
        asdesk.report.ReportWriteError
            The operating system cannot write the file to the disk.
        """
        with self._lock:
            if self._file is None or not self._unsynced:
                return
            try:
                os.fsync(self._file.fileno())
            except OSError as error:
                reason = f"cannot write the screening CSV to the disk ({error.strerror or error}); is the disk full?"
                raise _report_write_error(self.path, reason) from error
            self._unsynced = False

    def close(self) -> None:
        """Write the last rows to the disk, close the file and release the lock (idempotent)."""
        with contextlib.suppress(OSError):
            self.sync()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._unlock()

    def __enter__(self) -> ScreeningCsv:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()
        handle = getattr(self, "_lock_handle", None)
        if handle is not None:
            _release(handle)

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
            One ``{column: value}`` dict per row with every column of :data:`SCREENING_COLUMNS`, in file
            order; empty if the file does not exist. Rows of a legacy-format file get ``row_kind`` ``image``
            and ``status`` ``error`` or ``result``.

        Raises
        ------
        asdesk.report.ReportWriteError
            If the file exists but its header is not :data:`SCREENING_COLUMNS` (or the legacy one).
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
        header = tuple(records[0])
        if header not in _KNOWN_HEADERS:
            raise _report_write_error(path, f"is not an asdesk screening CSV (header {records[0][:4]}...)")
        rows = []
        for record in records[1:]:
            if not cls._valid(record, header):
                continue
            row = dict(zip(header, record, strict=True))
            if header == LEGACY_COLUMNS:
                row["row_kind"] = "image"
                row["status"] = "error" if row["error"] else "result"
            rows.append(row)
        return rows

    @classmethod
    def _valid(cls, record: list[str], header: tuple[str, ...]) -> bool:
        if len(record) != len(header) or not record[0]:
            return False
        try:
            datetime.fromisoformat(record[-1])
        except ValueError:
            return False
        return True

    @classmethod
    def completed(cls, path: str | Path, include_errors: bool = True) -> set[tuple[str, str]]:
        """The (file, frame) keys of image rows already in a screening CSV, to skip them when resuming.

        A row with an error counts as done by default, so that a resumed run does not retry files that
        cannot be read; a ``--retry-errors`` caller passes ``include_errors=False`` and gets only the
        keys with a successful or ``skipped`` row (a key that failed once and succeeded later is included).
        Study rows are not included (see :meth:`completed_studies`).

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
            if row["row_kind"] != "image":
                continue
            key = (row["file"], row["frame"])
            (failed if row["status"] == "error" else succeeded).add(key)
        return succeeded | failed if include_errors else succeeded

    @classmethod
    def completed_studies(cls, path: str | Path, include_errors: bool = True) -> set[tuple[str, str]]:
        """The (series UID, model id) pairs that already have a study row.

        Parameters
        ----------
        path : str or Path
            The CSV; a missing file gives an empty set.
        include_errors : bool
            Count study error rows as done.

        Returns
        -------
        set of tuple (str, str)
        """
        return {(row["series_uid"], row["model_id"]) for row in cls.read_rows(path)
                if row["row_kind"] == "study" and (include_errors or row["status"] != "error")}
