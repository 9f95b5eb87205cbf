"""Screen a folder: analyse every image under it and append one CSV row per file as it goes.

The work behind ``asdesk screen`` and the window's "Screen folder…". Every file the walk visits gets a row:
a result, an error (a bad file never stops the run, whatever its decoder raises) or "skipped: not an
image (...)". A DICOM series (several slices with one Series Instance UID) also gets a study-level row by
its model card's study rule once all its slices have rows. An interrupted run (crash, power cut, cancel)
resumes where it stopped: files whose (file, frame) key is already in the CSV are skipped, error rows
included unless ``retry_errors`` is set.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asdesk.core import (
    AnalysisResult,
    AsdeskError,
    CancelledError,
    CancelToken,
    EmptySeriesError,
    ImageRecord,
    ModelInfo,
    NullProgress,
    ProgressSink,
    ReadError,
    series_refused,
)
from asdesk.io import ScanItem, read_item
from asdesk.io.discover import discover_all
from asdesk.io.sanity import describe, must_propagate
from asdesk.report import ScreeningCsv
from asdesk.tasks.analysis import analyze_batch
from asdesk.tasks.engines import EngineCache, default_engines

if TYPE_CHECKING:
    from asdesk.inference import InferenceEngine

LOGGER = logging.getLogger(__name__)

__all__ = [
    "ScreeningCancelledError",
    "ScreeningError",
    "ScreeningSummary",
    "remaining_rows",
    "report_name",
    "screen_folder",
]


@dataclass
class ScreeningSummary:
    """What a screening run did.

    Attributes
    ----------
    n_done : int
        Images analysed in this run (result rows, including refused ones).
    n_skipped_resumed : int
        Images skipped because the CSV already had their row (resume).
    n_errors : int
        Error rows written in this run.
    csv_path : Path
        The CSV.
    elapsed_s : float
        Wall time of the run, in seconds.
    n_found : int
        Images found under the folder.
    n_refused : int
        Analysed images refused by their model's gates (outside what it was validated for): no finding.
    cancelled : bool
        True when the run stopped because its cancel token was set.
    reports : list of Path
        PDF reports written (with ``reports_dir``).
    report_errors : list of str
        PDF reports that could not be written (the CSV row was written anyway).
    n_not_images : int
        Files that hold no image ("skipped" rows written in this run).
    n_ignored : int
        Files not opened because of their name (hidden files, documents, DICOMDIR, ...): no row.
    n_errors_before : int
        Files of this folder whose error row was already in the CSV (resumed, not retried).
    n_study_rows : int
        Study-level rows written in this run.
    n_study_errors : int
        Of those, rows without a study result (a slice failed, or the model is gone).
    n_files : int
        Image rows the folder needs: one per visited file (one per frame of a multi-frame file), images,
        broken files and non-images alike.
    """

    n_done: int
    n_skipped_resumed: int
    n_errors: int
    csv_path: Path
    elapsed_s: float
    n_found: int = 0
    n_refused: int = 0
    cancelled: bool = False
    reports: list[Path] = field(default_factory=list)
    report_errors: list[str] = field(default_factory=list)
    n_not_images: int = 0
    n_ignored: int = 0
    n_errors_before: int = 0
    n_study_rows: int = 0
    n_study_errors: int = 0
    n_files: int = 0

    @property
    def failed(self) -> bool:
        """Whether any file of the folder has an error row (this run's or a resumed one) or a study failed."""
        return self.n_errors > 0 or self.n_errors_before > 0 or self.n_study_errors > 0

    @property
    def images_per_second(self) -> float:
        """Rows written (results and errors) per second of this run."""
        written = self.n_done + self.n_errors
        return written / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True)
class ScreeningError:
    """An image that could not be analysed (what ``on_row`` receives instead of an AnalysisResult).

    Attributes
    ----------
    path : Path
        The file.
    frame : int or None
        0-based frame of a multi-frame file.
    message : str
        What went wrong, as written in the CSV's ``error`` column.
    model : ModelInfo or None
        The model that would have analysed it, when known.
    status : {"error", "skipped"}
        ``"skipped"`` for a file that holds no image (``message`` says why).
    """

    path: Path
    frame: int | None
    message: str
    model: ModelInfo | None = None
    status: str = "error"


class ScreeningCancelledError(CancelledError):
    """A screening run was cancelled; the rows written so far stay in the CSV.

    Attributes
    ----------
    summary : ScreeningSummary
        What the run did before it stopped (``cancelled`` is True).
    """

    def __init__(self, summary: ScreeningSummary) -> None:
        self.summary = summary
        super().__init__(
            f"screening cancelled after {summary.n_done + summary.n_errors} image(s); "
            f"{summary.csv_path} keeps the rows written so far: run the same screening again "
            "to resume"
        )


RowCallback = Callable[[AnalysisResult | ScreeningError], None]


def report_name(path: Path, frame: int | None, root: Path) -> str:
    """File name of a per-image PDF report: the path under ``root`` made flat, e.g. ``3__9001L.pdf``.

    Parameters
    ----------
    path : Path
        The image file.
    frame : int or None
        Frame of a multi-frame file (added as ``-f<frame>``).
    root : Path
        The screened folder.

    Returns
    -------
    str
    """
    try:
        relative = Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        relative = Path(Path(path).name)
    stem = "__".join(relative.with_suffix("").parts) or Path(path).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    return f"{stem}{'' if frame is None else f'-f{frame}'}.pdf"


def _message(error: BaseException, path: Path | None = None) -> str:
    """An error for the CSV: asdesk errors as they are (they name the file), others with the file name."""
    if isinstance(error, AsdeskError) and (path is None or str(path) in str(error)):
        return str(error)
    text = str(error) if isinstance(error, AsdeskError) else describe(error)
    return f"{path}: {text}" if path is not None else text


def remaining_rows(folder: str | Path, csv_path: str | Path, cancel: CancelToken | None = None) -> int:
    """How many image rows a run of :func:`screen_folder` on ``folder`` into ``csv_path`` would still write.

    The same walk and the same resume rule as :func:`screen_folder` (error rows count as done), without
    analysing anything: the window uses it to offer "Resume screening" only when rows remain.

    Parameters
    ----------
    folder : str or Path
        The folder screened.
    csv_path : str or Path
        Its screening CSV (a missing file: every row remains).
    cancel : CancelToken, optional
        Checked between files.

    Returns
    -------
    int
        Files (frames of multi-frame files) under ``folder`` without a row in ``csv_path``.

    Raises
    ------
    ReadError
        ``folder`` does not exist.
    """
    found = discover_all(folder, cancel=cancel)
    done = ScreeningCsv.completed(csv_path, include_errors=True)
    return sum(1 for item in found.items if ScreeningCsv.key(item.path, item.frame) not in done)


def screen_folder(
    folder: str | Path,
    csv_path: str | Path,
    model_id: str | None = None,
    operating_point: str | None = None,
    reports_dir: str | Path | None = None,
    batch_size: int = 16,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
    on_row: RowCallback | None = None,
    engines: EngineCache | None = None,
    retry_errors: bool = False,
) -> ScreeningSummary:
    """Analyse every image under a folder, appending one CSV row per file as soon as it is done.

    Parameters
    ----------
    folder : str or Path
        Walked recursively by :func:`asdesk.io.discover`: DICOM files (with or without extension; every
        frame of a multi-frame file) and PNG/JPEG/TIFF files.
    csv_path : str or Path
        The screening CSV (:class:`asdesk.report.ScreeningCsv`). If it exists, the images it already has a
        row for (results and errors) are skipped: the run resumes.
    model_id : str, optional
        Pack id for every image. Default: each image gets the pack whose card covers its modality and body
        part; an image no pack covers gets an error row.
    operating_point : str, optional
        ``"high_sensitivity"``, ``"balanced"`` or ``"high_specificity"``; default the card's.
    reports_dir : str or Path, optional
        Write a PDF report per image here (named by :func:`report_name`); Grad-CAM is computed only then.
    batch_size : int
        Images read and classified together (>= 1).
    progress : ProgressSink, optional
        ``start(images to do)``, ``advance(1, file name)`` per row, ``finish``.
    cancel : CancelToken, optional
        Checked between batches.
    on_row : callable, optional
        Called with each row's :class:`~asdesk.core.AnalysisResult` or :class:`ScreeningError`, after the
        row is on disk (the window's results table).
    engines : EngineCache, optional
        Loaded models; default :func:`~asdesk.tasks.engines.default_engines`.
    retry_errors : bool
        Analyse again the files whose row in the CSV is an error (default: a resumed run skips them).

    Returns
    -------
    ScreeningSummary
        ``failed`` tells whether any file of the folder has an error row.

    Raises
    ------
    ReadError
        ``folder`` does not exist or is not a folder.
    EmptySeriesError
        No image (and no broken file) under ``folder``: nothing to screen; no row is written.
    CsvLockedError
        Another process is writing ``csv_path``.
    ModelNotFoundError, CardError
        ``model_id`` names no pack, or a broken one (checked before any row is written).
    ReportWriteError
        The CSV cannot be created or appended to.
    ScreeningCancelledError
        ``cancel`` was set; the CSV keeps every finished row and ``error.summary`` tells what was done.
    """
    started = time.perf_counter()
    folder = Path(folder)
    if not folder.is_dir():
        raise ReadError(folder, "is not a folder; give the folder to screen")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sink = progress or NullProgress()
    cache = engines or default_engines()
    fixed_engine = cache.get(model_id) if model_id else None
    reports = Path(reports_dir) if reports_dir is not None else None
    if reports is not None:
        reports.mkdir(parents=True, exist_ok=True)
    found = discover_all(folder, progress=progress, cancel=cancel)
    items = found.items
    if not any(item.kind != "skipped" for item in items):
        raise EmptySeriesError(
            folder,
            f"no image found here ({len(items)} file(s) looked at hold no image, {found.ignored} ignored by "
            "name); nothing was screened: check the folder",
        )
    rows_before = ScreeningCsv.completed(csv_path, include_errors=True)
    done_keys = rows_before if not retry_errors else ScreeningCsv.completed(csv_path, include_errors=False)
    todo = [item for item in items if ScreeningCsv.key(item.path, item.frame) not in done_keys]
    errors_before = rows_before - ScreeningCsv.completed(csv_path, include_errors=False)
    errors_kept = errors_before & done_keys  # error rows not retried this run (a set: no quadratic scan)
    summary = ScreeningSummary(
        n_done=0,
        n_skipped_resumed=len(items) - len(todo),
        n_errors=0,
        csv_path=Path(csv_path),
        elapsed_s=0.0,
        n_found=found.n_images,
        n_files=len(items),
        n_ignored=found.ignored,
        n_errors_before=sum(1 for item in items if ScreeningCsv.key(item.path, item.frame) in errors_kept),
    )
    LOGGER.info(
        "screening %s: %d image(s) found, %d already in %s",
        folder,
        len(items),
        summary.n_skipped_resumed,
        csv_path,
    )
    sink.start(len(todo), f"Screening {folder.name or folder}")
    try:
        with ScreeningCsv(csv_path, sync_each_row=False) as log:  # one fsync per batch (group commit)
            marker = DecodeMarker(Path(csv_path))
            crashed = marker.crashed_on()
            if crashed is not None and not retry_errors:
                todo = _record_crash(crashed, todo, log, summary)
                log.sync()  # the crash's error row is on the disk before its marker goes
            marker.clear()

            def write_error(item: ScanItem, message: str, model: ModelInfo | None) -> None:
                if item.kind == "skipped":
                    log.write_skipped(item.path, message)
                    summary.n_not_images += 1
                else:
                    log.write_error(item.path, item.frame, message, model)
                    summary.n_errors += 1
                LOGGER.info("screening: %s: %s", Path(item.path).name, message)
                sink.advance(1, Path(item.path).name)
                if on_row is not None:
                    on_row(ScreeningError(Path(item.path), item.frame, message, model,
                                          "skipped" if item.kind == "skipped" else "error"))

            def write_result(item: ScanItem, result: AnalysisResult, engine: InferenceEngine) -> None:
                if reports is not None:
                    _write_report(reports, folder, item, result, engine, operating_point, summary)
                log.write_result(result)
                summary.n_done += 1
                summary.n_refused += int(result.refused)
                sink.advance(1, Path(item.path).name)
                if on_row is not None:
                    on_row(result)

            for start in range(0, len(todo), batch_size):
                if cancel is not None and cancel.cancelled:
                    summary.cancelled = True
                    break
                _screen_batch(todo[start : start + batch_size], cache, fixed_engine, operating_point,
                              reports is not None, write_result, write_error, marker)
                log.sync()
            if not summary.cancelled:
                _write_study_rows(log, items, cache, retry_errors, summary)
    finally:
        summary.elapsed_s = time.perf_counter() - started
        sink.finish()
    LOGGER.info(
        "screening %s: %d done, %d errors, %d not images, %d study rows, %d skipped (resume) in %.1f s%s",
        folder,
        summary.n_done,
        summary.n_errors,
        summary.n_not_images,
        summary.n_study_rows,
        summary.n_skipped_resumed,
        summary.elapsed_s,
        " (cancelled)" if summary.cancelled else "",
    )
    if summary.cancelled:
        raise ScreeningCancelledError(summary)
    return summary


class DecodeMarker:
    """Names the file being decoded, so that a process killed by a native decoder crash loses no row.

    Python can catch a decoder's exceptions (a Rust panic included), not a segmentation fault or an abort in
    native code: the process dies. Before each file is decoded its (file, frame) key is written to a small
    file beside the CSV (``.<csv name>.decoding``; the OS keeps it when the process dies) and cleared when the
    decode returns. A resumed run that finds a key there writes that file's error row instead of decoding it
    again, so one poisoned file cannot stop a screening for ever (``--retry-errors`` tries it again).

    Parameters
    ----------
    csv_path : Path
        The screening CSV.
    """

    def __init__(self, csv_path: Path) -> None:
        self.path = csv_path.with_name(f".{csv_path.name}.decoding")

    def crashed_on(self) -> tuple[str, str] | None:
        """The key a previous run was decoding when it died, or ``None``."""
        try:
            text = self.path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError):
            return None
        if "\t" not in text:
            return None
        file_name, frame = text.split("\t", 1)
        return (file_name, frame)

    def set(self, key: tuple[str, str]) -> None:
        """Record that ``key`` is being decoded now."""
        with self.path.open("w", encoding="utf-8") as handle:
            handle.write(f"{key[0]}\t{key[1]}\n")

    def clear(self) -> None:
        """Nothing is being decoded."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _record_crash(key: tuple[str, str], todo: list[ScanItem], log: ScreeningCsv,
                  summary: ScreeningSummary) -> list[ScanItem]:
    """Write the error row of the file a previous run died decoding, and take it off the to-do list."""
    crashed = [item for item in todo if ScreeningCsv.key(item.path, item.frame) == key]
    if not crashed:
        return todo
    item = crashed[0]
    message = (f"{item.path}: asdesk stopped while decoding this file in an earlier run (a crash in a native "
               "decoder); it was not analysed again. Check the file; --retry-errors tries it once more")
    log.write_error(item.path, item.frame, message, None)
    summary.n_errors += 1
    LOGGER.warning("screening: %s crashed the decoder in an earlier run; error row written", Path(item.path).name)
    return [other for other in todo if other is not item]


def _screen_batch(
    batch: Sequence[ScanItem],
    cache: EngineCache,
    fixed_engine: InferenceEngine | None,
    operating_point: str | None,
    gradcam: bool,
    write_result: Callable[[ScanItem, AnalysisResult, InferenceEngine], None],
    write_error: Callable[[ScanItem, str, ModelInfo | None], None],
    marker: DecodeMarker | None = None,
) -> None:
    """Read, route to engines, classify and write one batch; rows keep the batch's order."""
    outcomes: list[tuple[str, Any, Any]] = [("pending", None, None)] * len(batch)
    groups: dict[int, tuple[InferenceEngine, list[int], list[ImageRecord]]] = {}
    for index, item in enumerate(batch):
        if not item.is_image:
            message = item.reason if item.kind == "skipped" else _message(ReadError(item.path, item.reason))
            outcomes[index] = ("error", message, None)
            continue
        if marker is not None:
            marker.set(ScreeningCsv.key(item.path, item.frame))
        try:
            record = read_item(item)
        except BaseException as error:  # noqa: BLE001 - never stop on a bad file, whatever its decoder raised
            if must_propagate(error):
                raise
            outcomes[index] = ("error", _message(error, Path(item.path)), _model_info(fixed_engine))
            continue
        finally:
            if marker is not None:
                marker.clear()
        try:
            engine = fixed_engine or cache.for_record(record)
        except AsdeskError as error:
            outcomes[index] = ("error", _message(error, Path(item.path)), None)
            continue
        group = groups.setdefault(id(engine), (engine, [], []))
        group[1].append(index)
        group[2].append(record)
    for engine, indices, records in groups.values():
        for index, result in zip(
            indices, _classify_robustly(engine, records, operating_point, gradcam), strict=True
        ):
            outcomes[index] = (
                ("result", result, engine)
                if isinstance(result, AnalysisResult)
                else ("error", _with_name(result, Path(batch[index].path)), engine.info)
            )
    for item, (kind, value, extra) in zip(batch, outcomes, strict=True):
        if kind == "result":
            write_result(item, value, extra)
        else:
            write_error(item, value, extra)


def _with_name(message: str, path: Path) -> str:
    """Prefix the file name to a message that does not name it yet."""
    return message if str(path) in message else f"{path}: {message}"


def _classify_robustly(
    engine: InferenceEngine,
    records: list[ImageRecord],
    operating_point: str | None,
    gradcam: bool,
) -> list[AnalysisResult | str]:
    """``engine.analyze`` on the batch; if it fails, image by image so that only the bad image fails."""
    try:
        return list(analyze_batch(engine, records, operating_point, gradcam))
    except BaseException as batch_error:  # noqa: BLE001 - isolate the image that fails
        if must_propagate(batch_error):
            raise
        if len(records) == 1:
            return [_message(batch_error)]
        LOGGER.info("batch of %d failed (%s); analysing image by image", len(records), _message(batch_error))
    outcomes: list[AnalysisResult | str] = []
    for record in records:
        try:
            outcomes.append(analyze_batch(engine, [record], operating_point, gradcam)[0])
        except BaseException as error:  # noqa: BLE001
            if must_propagate(error):
                raise
            outcomes.append(_message(error))
    return outcomes


def _model_info(engine: InferenceEngine | None) -> ModelInfo | None:
    return None if engine is None else engine.info


def _write_report(
    reports: Path,
    folder: Path,
    item: ScanItem,
    result: AnalysisResult,
    engine: InferenceEngine,
    operating_point: str | None,
    summary: ScreeningSummary,
) -> None:
    from asdesk.report import write_pdf_report

    target = reports / report_name(Path(item.path), item.frame, folder)
    note = (
        f"{result.prediction.operating_point} (chosen for this screening)"
        if operating_point
        else f"{result.prediction.operating_point} (the model card's default)"
    )
    try:
        write_pdf_report(target, result, engine.card.raw, operating_point_note=note)
    except Exception as error:  # noqa: BLE001 - a report failure must not lose the CSV row
        message = f"{target}: {_message(error)}"
        summary.report_errors.append(message)
        LOGGER.warning("screening: PDF report not written: %s", message)
        return
    summary.reports.append(target)


def _write_study_rows(
    log: ScreeningCsv,
    items: Sequence[ScanItem],
    cache: EngineCache,
    retry_errors: bool,
    summary: ScreeningSummary,
) -> None:
    """One study-level row per DICOM series of the folder whose slices all have rows, per model.

    Works from the CSV (not from this run's memory), so that a resumed run completes the study rows of
    series finished earlier. A series with a failed slice gets a study error row, never a study result
    computed from the slices that happened to work.
    """
    series: dict[str, list[tuple[str, str]]] = {}
    for item in items:
        if item.kind == "dicom" and item.series_uid:
            series.setdefault(item.series_uid, []).append(ScreeningCsv.key(item.path, item.frame))
    series = {uid: keys for uid, keys in series.items() if len(keys) >= 2}
    if not series:
        return
    latest: dict[tuple[str, str], dict[str, str]] = {}
    for row in ScreeningCsv.read_rows(log.path):
        if row["row_kind"] == "image":
            latest[(row["file"], row["frame"])] = row
    have = ScreeningCsv.completed_studies(log.path, include_errors=not retry_errors)
    for uid, keys in series.items():
        rows = [latest.get(key) for key in keys]
        if any(row is None for row in rows):
            continue  # not finished (cancelled run): the next run writes it
        complete = [row for row in rows if row is not None]
        models = {row["model_id"] for row in complete if row["status"] == "result"} or {""}
        for model_id in sorted(models):
            if (uid, model_id) in have:
                continue
            _write_one_study(log, uid, keys, complete, model_id, cache, summary)


def _write_one_study(
    log: ScreeningCsv,
    uid: str,
    keys: list[tuple[str, str]],
    rows: list[dict[str, str]],
    model_id: str,
    cache: EngineCache,
    summary: ScreeningSummary,
) -> None:
    folder = os.path.commonpath([key[0] for key in keys])
    if os.path.isfile(folder):
        folder = os.path.dirname(folder)
    scored = [row for row in rows if row["status"] == "result" and row["model_id"] == model_id]
    refused = [row for row in rows if row["status"] == "refused" and row["model_id"] == model_id]
    first = (scored or rows)[0]
    identifiers = {name: first[name] for name in ("patient_id", "study_uid", "series_uid", "modality")}
    identifiers["series_uid"] = uid
    error = ""
    model: ModelInfo | None = None
    card = None
    if series_refused(len(refused), len(rows)):
        error = (f"refused: {len(refused)} of the {len(rows)} slices of this series are outside what {model_id} was "
                 "validated for: the series is too, no study result")
    elif not scored:
        error = f"no slice of this series ({len(rows)}) could be analysed: no study result"
    else:
        try:
            card = cache.find(pack_id=model_id).card
            model = card.model_info()
        except AsdeskError as failure:
            error = f"the model pack {model_id!r} that scored the slices cannot be found ({failure})"
        if card is not None and card.sha256 != first["model_sha256"]:
            error = (f"the model pack {model_id!r} changed since its slices were scored (other SHA-256): "
                     "run the screening again with --retry-errors in a new CSV")
        failed = len(rows) - len(scored) - len(refused)  # refused slices are left out of the study, as in analyze
        if not error and failed:
            error = (f"{failed} of the {len(rows)} slices of this series have no result with {model_id}: no study "
                     "result (the study rule needs every slice)")
    if error or card is None:
        log.write_study(folder, identifiers, model, None, None, "", "", error_message=error or "no model")
        summary.n_study_errors += 1
    else:
        outputs = [float(row.get("model_output") or row["probability"]) for row in scored]
        probability, threshold, operating_point, finding = _study_score(outputs, card)
        log.write_study(folder, identifiers, model, probability, threshold, operating_point, finding)
    summary.n_study_rows += 1


def _study_score(outputs: list[float], card: Any) -> tuple[float, float, str, str]:  # noqa: ANN401
    """(score, threshold, operating point, finding) from raw slice outputs, by the card's study rule.

    The same decision as :func:`asdesk.tasks.decision.study_decision` (the window and ``asdesk analyze``).
    """
    from asdesk.tasks.decision import judge, study_result

    rule = card.study_rule
    if rule is not None:
        score, prediction = study_result(outputs, rule, card.positive_label, card.negative_label)
        return score, prediction.threshold, prediction.operating_point, prediction.finding
    prediction = judge(card, max(outputs), None)
    return prediction.probability, prediction.threshold, prediction.operating_point, prediction.finding
