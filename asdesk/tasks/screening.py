"""Screen a folder: analyse every image under it and append one CSV row per image as it goes.

The work behind ``asdesk screen`` and the window's "Screen folder…". A bad file never stops the run: it
gets a row with the error. An interrupted run (crash, power cut, cancel) resumes where it stopped: images
whose (file, frame) key is already in the CSV are skipped.
"""

from __future__ import annotations

import logging
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
    ImageRecord,
    ModelInfo,
    NullProgress,
    ProgressSink,
    ReadError,
)
from asdesk.io import ScanItem, discover, read_item
from asdesk.report import ScreeningCsv
from asdesk.tasks.engines import EngineCache, default_engines

if TYPE_CHECKING:
    from asdesk.inference import InferenceEngine

LOGGER = logging.getLogger(__name__)

__all__ = [
    "ScreeningCancelledError",
    "ScreeningError",
    "ScreeningSummary",
    "report_name",
    "screen_folder",
]


@dataclass
class ScreeningSummary:
    """What a screening run did.

    Attributes
    ----------
    n_done : int
        Images analysed successfully in this run (rows with a probability).
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
    cancelled : bool
        True when the run stopped because its cancel token was set.
    reports : list of Path
        PDF reports written (with ``reports_dir``).
    report_errors : list of str
        PDF reports that could not be written (the CSV row was written anyway).
    """

    n_done: int
    n_skipped_resumed: int
    n_errors: int
    csv_path: Path
    elapsed_s: float
    n_found: int = 0
    cancelled: bool = False
    reports: list[Path] = field(default_factory=list)
    report_errors: list[str] = field(default_factory=list)

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
    """

    path: Path
    frame: int | None
    message: str
    model: ModelInfo | None = None


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


def _message(error: BaseException) -> str:
    if isinstance(error, AsdeskError):
        return str(error)
    return f"{type(error).__name__}: {error}"


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
) -> ScreeningSummary:
    """Analyse every image under a folder, appending one CSV row per image as soon as it is done.

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

    Returns
    -------
    ScreeningSummary

    Raises
    ------
    ReadError
        ``folder`` does not exist or is not a folder.
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
    items = list(discover(folder, progress=progress, cancel=cancel))
    done_keys = ScreeningCsv.completed(csv_path)
    todo = [item for item in items if ScreeningCsv.key(item.path, item.frame) not in done_keys]
    summary = ScreeningSummary(
        n_done=0,
        n_skipped_resumed=len(items) - len(todo),
        n_errors=0,
        csv_path=Path(csv_path),
        elapsed_s=0.0,
        n_found=len(items),
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
        with ScreeningCsv(csv_path) as log:

            def write_error(item: ScanItem, message: str, model: ModelInfo | None) -> None:
                log.write_error(item.path, item.frame, message, model)
                summary.n_errors += 1
                LOGGER.info("screening: %s: %s", Path(item.path).name, message)
                sink.advance(1, Path(item.path).name)
                if on_row is not None:
                    on_row(ScreeningError(Path(item.path), item.frame, message, model))

            def write_result(item: ScanItem, result: AnalysisResult, engine: InferenceEngine) -> None:
                if reports is not None:
                    _write_report(reports, folder, item, result, engine, operating_point, summary)
                log.write_result(result)
                summary.n_done += 1
                sink.advance(1, Path(item.path).name)
                if on_row is not None:
                    on_row(result)

            for start in range(0, len(todo), batch_size):
                if cancel is not None and cancel.cancelled:
                    summary.cancelled = True
                    break
                batch = todo[start : start + batch_size]
                _screen_batch(
                    batch,
                    cache,
                    fixed_engine,
                    operating_point,
                    reports is not None,
                    write_result,
                    write_error,
                )
    finally:
        summary.elapsed_s = time.perf_counter() - started
        sink.finish()
    LOGGER.info(
        "screening %s: %d done, %d errors, %d skipped (resume) in %.1f s%s",
        folder,
        summary.n_done,
        summary.n_errors,
        summary.n_skipped_resumed,
        summary.elapsed_s,
        " (cancelled)" if summary.cancelled else "",
    )
    if summary.cancelled:
        raise ScreeningCancelledError(summary)
    return summary


def _screen_batch(
    batch: Sequence[ScanItem],
    cache: EngineCache,
    fixed_engine: InferenceEngine | None,
    operating_point: str | None,
    gradcam: bool,
    write_result: Callable[[ScanItem, AnalysisResult, InferenceEngine], None],
    write_error: Callable[[ScanItem, str, ModelInfo | None], None],
) -> None:
    """Read, route to engines, classify and write one batch; rows keep the batch's order."""
    outcomes: list[tuple[str, Any, Any]] = [("pending", None, None)] * len(batch)
    groups: dict[int, tuple[InferenceEngine, list[int], list[ImageRecord]]] = {}
    for index, item in enumerate(batch):
        try:
            record = read_item(item)
        except Exception as error:  # noqa: BLE001 - never stop on a bad file
            outcomes[index] = ("error", _message(error), _model_info(fixed_engine))
            continue
        try:
            engine = fixed_engine or cache.for_record(record)
        except AsdeskError as error:
            outcomes[index] = ("error", str(error), None)
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
                else ("error", result, engine.info)
            )
    for item, (kind, value, extra) in zip(batch, outcomes, strict=True):
        if kind == "result":
            write_result(item, value, extra)
        else:
            write_error(item, value, extra)


def _classify_robustly(
    engine: InferenceEngine,
    records: list[ImageRecord],
    operating_point: str | None,
    gradcam: bool,
) -> list[AnalysisResult | str]:
    """``engine.analyze`` on the batch; if it fails, image by image so that only the bad image fails."""
    try:
        return list(engine.analyze(records, operating_point=operating_point, gradcam=gradcam))
    except CancelledError:
        raise
    except Exception as batch_error:  # noqa: BLE001 - isolate the image that fails
        if len(records) == 1:
            return [_message(batch_error)]
        LOGGER.info("batch of %d failed (%s); analysing image by image", len(records), _message(batch_error))
    outcomes: list[AnalysisResult | str] = []
    for record in records:
        try:
            outcomes.append(engine.analyze([record], operating_point=operating_point, gradcam=gradcam)[0])
        except CancelledError:
            raise
        except Exception as error:  # noqa: BLE001
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
