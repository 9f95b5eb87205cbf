"""Analyse one image, one multi-frame file or one DICOM series: the work behind ``asdesk analyze`` and the
window's "Analyse" action.

Plain functions with ``progress`` and ``cancel`` handles (DESIGN.md, "Threads and long work"): no Qt, no
tqdm, no printing. The caller decides how progress is shown and what happens to the result.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asdesk.core import (
    AnalysisResult,
    CancelToken,
    EmptySeriesError,
    GateVerdict,
    ImageRecord,
    NullProgress,
    ProgressSink,
    ReadError,
    SeriesResult,
    series_refused,
)
from asdesk.io import read_frames, read_series
from asdesk.tasks.decision import judge, scaled_heatmap, study_decision
from asdesk.tasks.engines import EngineCache, default_engines
from asdesk.tasks.gates import content_reasons, metadata_reasons

if TYPE_CHECKING:
    from asdesk.inference import InferenceEngine, ModelCard

LOGGER = logging.getLogger(__name__)

__all__ = [
    "ANALYSIS_BATCH_SIZE",
    "analyze_batch",
    "analyze_image",
    "analyze_path",
    "analyze_records",
    "analyze_series",
    "read_path",
    "study_decision",
]

ANALYSIS_BATCH_SIZE = 8
"""Images per :func:`analyze_batch` call; progress and cancel are checked between batches."""


def _check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()


def read_path(
    path: str | Path, progress: ProgressSink | None = None, cancel: CancelToken | None = None
) -> tuple[list[ImageRecord], list[str], bool]:
    """Read what ``asdesk analyze`` was given: an image file, a multi-frame file or a series folder.

    Parameters
    ----------
    path : str or Path
        A DICOM file (with or without extension), a PNG/JPEG/TIFF file, or a folder holding one DICOM
        series.
    progress : ProgressSink, optional
        Receives the reading of a series folder, file by file.
    cancel : CancelToken, optional
        Checked between files of a series.

    Returns
    -------
    records : list of ImageRecord
        One record for a single-frame file; the frames of a multi-frame file; the slices of a series, in
        series order (InstanceNumber, then slice position).
    errors : list of str
        Files of a series folder that could not be read, each with its reason.
    is_series : bool
        True for a folder or a multi-frame file: the result is then a :class:`~asdesk.core.SeriesResult`.

    Raises
    ------
    ReadError
        The path does not exist, is not an image, or a folder holds no readable image
        (:class:`~asdesk.core.EmptySeriesError`).
    CancelledError
        ``cancel`` was set.
    """
    path = Path(path)
    if not path.exists():
        raise ReadError(path, "no such file or folder; check the path")
    if path.is_dir():
        records, errors = read_series(path, progress=progress, cancel=cancel)
        records = list(records)
        if not records:
            raise EmptySeriesError(
                path,
                "the folder holds no readable image"
                + (f" ({len(errors)} file(s) failed: {errors[0]})" if errors else ""),
            )
        return records, [str(error) for error in errors], True
    frames = list(read_frames(path))
    if not frames:
        raise EmptySeriesError(path, "the file holds no image frame")
    return frames, [], len(frames) > 1


def analyze_batch(
    engine: InferenceEngine,
    records: Sequence[ImageRecord],
    operating_point: str | None = None,
    gradcam: bool = True,
    force: bool = False,
    cancel: CancelToken | None = None,
) -> list[AnalysisResult]:
    """The one analysis path: run the model, apply both gates, calibrate, judge and draw the heat map.

    Every entry point (``asdesk analyze``, ``asdesk screen``, the window, the self-test) comes here, so a gate
    cannot be bypassed by choosing the model another way (DESIGN.md, "A finding is earned").

    Parameters
    ----------
    engine : InferenceEngine
        The chosen pack's engine (chosen automatically, by ``--model`` or by a saved default: the same gates
        apply).
    records : sequence of ImageRecord
        Images as read.
    operating_point : str, optional
        ``"high_sensitivity"``, ``"balanced"`` or ``"high_specificity"``; default the card's.
    gradcam : bool
        Compute Grad-CAM heat maps and overlays (none is drawn for a refused image).
    force : bool
        Override a refusal: the result gets a finding, and ``result.gate.overridden`` marks it as outside
        validated use everywhere it is shown.
    cancel : CancelToken, optional

    Returns
    -------
    list of AnalysisResult
        One per record, in order. A refused image (``result.refused``) carries the model's output for audit
        but no finding is shown for it.

    Raises
    ------
    CancelledError, CardError, ModelHashMismatchError, PreprocessError
        See :meth:`asdesk.inference.InferenceEngine.infer`.
    """
    from asdesk.inference import overlay_rgba

    card = engine.card
    name, _threshold = card.threshold(operating_point)
    outputs = engine.infer(records, gradcam=gradcam, cancel=cancel)
    threshold = None
    if engine.content_gate is not None:
        threshold = float(engine.content_gate.threshold)
    results = []
    for output in outputs:
        reasons = metadata_reasons(card, output.record.metadata) + content_reasons(output.distance, threshold)
        gate = GateVerdict(reasons=reasons, distance=output.distance, threshold=threshold,
                           overridden=bool(force and reasons), content_checked=engine.content_gate is not None)
        prediction = judge(card, output.probability, name)
        start = time.perf_counter()
        heatmap = scaled_heatmap(output.heatmap, prediction, gate.refused, scale=card.explanation == "grad_cam")
        overlay = overlay_rgba(heatmap) if heatmap is not None else None
        timings = dict(output.timings_ms)
        if output.heatmap is not None:
            timings["gradcam"] = timings.get("gradcam", 0.0) + (time.perf_counter() - start) * 1000.0
        geometry = output.model_input.geometry
        top, left, bottom, right = (int(v) for v in geometry.crop_box)
        whole = (top, left, bottom, right) == (0, 0, *geometry.image_shape)
        if gate.refused:
            LOGGER.info("%s refused by %s: %s", output.record.metadata.source.name, card.id, "; ".join(reasons))
        results.append(AnalysisResult(
            record=output.record, model_input=output.model_input.image, prediction=prediction, model=engine.info,
            heatmap=heatmap, overlay=overlay, timings_ms=timings, gate=gate,
            crop_box=None if whole else (top, left, bottom, right)))
    return results


def series_result(slices: Sequence[AnalysisResult], card: ModelCard, errors: Sequence[str] = ()) -> SeriesResult:
    """A series' result: its slices and the study-level result by the card's rule (:func:`study_decision`).

    When most slices are refused by the model's gates the whole series is outside what the model was
    validated for: its remaining slices are refused too (reason: the rest of the series), so no slice finding or
    heat map of a refused series is shown anywhere, and no study finding is made of a convenient subset.

    Parameters
    ----------
    slices : sequence of AnalysisResult
        In series order.
    card : ModelCard
    errors : sequence of str
        Files of the series that could not be read.

    Returns
    -------
    SeriesResult
    """
    refused = sum(1 for result in slices if result.refused)
    if series_refused(refused, len(slices)):
        reason = (f"the rest of its series ({refused} of {len(slices)} slices) is outside what the model was "
                  "validated for")
        slices = [result if result.refused or result.gate.overridden else dataclasses.replace(
            result, gate=dataclasses.replace(result.gate, reasons=(reason,)), heatmap=None, overlay=None)
            for result in slices]
    probability, prediction, rule_text = study_decision(slices, card)
    return SeriesResult(
        slices=tuple(slices),
        study_probability=probability,
        study_prediction=prediction,
        study_rule=rule_text,
        errors=tuple(errors),
    )


def _classify(
    engine: InferenceEngine,
    records: Sequence[ImageRecord],
    operating_point: str | None,
    gradcam: bool,
    progress: ProgressSink,
    cancel: CancelToken | None,
    read_ms: float = 0.0,
    force: bool = False,
) -> list[AnalysisResult]:
    results: list[AnalysisResult] = []
    for start in range(0, len(records), ANALYSIS_BATCH_SIZE):
        _check(cancel)
        batch = list(records[start : start + ANALYSIS_BATCH_SIZE])
        batch_results = analyze_batch(engine, batch, operating_point, gradcam, force, cancel)
        for result in batch_results:
            if read_ms and "read" not in result.timings_ms:
                result.timings_ms["read"] = read_ms
        results.extend(batch_results)
        name = batch[-1].metadata.source.name
        progress.advance(len(batch), name)
    return results


def analyze_image(
    record: ImageRecord,
    engine: InferenceEngine,
    operating_point: str | None = None,
    gradcam: bool = True,
    cancel: CancelToken | None = None,
    force: bool = False,
) -> AnalysisResult:
    """Classify one image (with Grad-CAM) with a loaded engine.

    Parameters
    ----------
    record : ImageRecord
        As read by :mod:`asdesk.io`.
    engine : InferenceEngine
        The model (see :class:`~asdesk.tasks.engines.EngineCache`).
    operating_point : str, optional
        ``"high_sensitivity"``, ``"balanced"`` or ``"high_specificity"``; default the card's.
    gradcam : bool
        Compute the Grad-CAM heat map and overlay.
    cancel : CancelToken, optional
        Checked before the work starts.
    force : bool
        Override a gate's refusal (the result is marked as outside validated use).

    Returns
    -------
    AnalysisResult
        Gated, calibrated and judged (:func:`analyze_batch`).
    """
    _check(cancel)
    return analyze_batch(engine, [record], operating_point, gradcam, force, cancel)[0]


def analyze_series(
    records: Sequence[ImageRecord],
    engine: InferenceEngine,
    operating_point: str | None = None,
    gradcam: bool = True,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
    errors: Sequence[str] = (),
    force: bool = False,
) -> SeriesResult:
    """Classify every slice of a series and make the study-level decision.

    Parameters
    ----------
    records : sequence of ImageRecord
        The slices, in series order (as :func:`asdesk.io.read_series` returns them).
    engine : InferenceEngine
        The model.
    operating_point : str, optional
        Slice operating point; default the card's.
    gradcam : bool
        Compute Grad-CAM for every slice.
    progress : ProgressSink, optional
        ``start(n slices)``, ``advance`` per batch, ``finish``.
    cancel : CancelToken, optional
        Checked between batches.
    errors : sequence of str
        Files of the series that could not be read; kept in the result.
    force : bool
        Override the gates' refusals (results marked as outside validated use).

    Returns
    -------
    SeriesResult
        Slices in the order given; study probability and finding by :func:`study_decision`.

    Raises
    ------
    CancelledError
        ``cancel`` was set.
    ValueError
        ``records`` is empty.
    """
    if not records:
        raise ValueError("a series needs at least one image")
    sink = progress or NullProgress()
    sink.start(len(records), f"Analysing {len(records)} slices with {engine.card.id}")
    try:
        slices = _classify(engine, records, operating_point, gradcam, sink, cancel, force=force)
    finally:
        sink.finish()
    return series_result(slices, engine.card, errors)


def analyze_records(
    records: Sequence[ImageRecord],
    model_id: str | None = None,
    operating_point: str | None = None,
    gradcam: bool = True,
    as_series: bool | None = None,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
    engines: EngineCache | None = None,
    errors: Sequence[str] = (),
    force: bool = False,
    preprocessing: Sequence[Mapping[str, Any]] | None = None,
) -> AnalysisResult | SeriesResult:
    """Analyse images that are already read (the window reads them first to show them).

    Parameters
    ----------
    records : sequence of ImageRecord
        One image, or the slices of a series in series order.
    model_id : str, optional
        Pack id; default: the pack whose card covers the first record's modality and body part.
    operating_point : str, optional
        Default the card's.
    gradcam : bool
        Compute Grad-CAM.
    as_series : bool, optional
        Force a :class:`SeriesResult` (True) or an :class:`AnalysisResult` (False, one record only);
        default: a series when there is more than one record.
    progress, cancel
        Progress sink and cancel token.
    engines : EngineCache, optional
        Default :func:`~asdesk.tasks.engines.default_engines`.
    errors : sequence of str
        Read errors of the series, kept in a :class:`SeriesResult`.
    force : bool
        Override the gates' refusals (results marked as outside validated use).
    preprocessing : sequence of mapping, optional
        A pipeline that departs from the card's (the window's preprocessing panel); the caller marks such
        results as outside the model's validation. ``None``: the card's pipeline.

    Returns
    -------
    AnalysisResult or SeriesResult

    Raises
    ------
    ModelNotFoundError
        No pack has ``model_id``, or none was named and none accepts the image.
    ValueError
        ``preprocessing`` is invalid or does not give the model's input size.
    CancelledError
        ``cancel`` was set.
    """
    if not records:
        raise ValueError("nothing to analyse: no image was given")
    cache = engines or default_engines()
    engine = cache.select(records[0], model_id)
    if preprocessing is not None:
        LOGGER.warning("analysing with preprocessing modified from card %s: outside its validation", engine.card.id)
        engine = engine.with_pipeline(preprocessing)
    series = len(records) > 1 if as_series is None else as_series
    if not series:
        if len(records) != 1:
            raise ValueError(f"as_series=False needs exactly one image, got {len(records)}")
        sink = progress or NullProgress()
        sink.start(1, f"Analysing with {engine.card.id}")
        try:
            result = analyze_image(records[0], engine, operating_point, gradcam, cancel, force)
            sink.advance(1, records[0].metadata.source.name)
        finally:
            sink.finish()
        return result
    return analyze_series(records, engine, operating_point, gradcam, progress, cancel, errors, force)


def analyze_path(
    path: str | Path,
    model_id: str | None = None,
    operating_point: str | None = None,
    gradcam: bool = True,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
    engines: EngineCache | None = None,
    force: bool = False,
) -> AnalysisResult | SeriesResult:
    """Read and analyse a file or a DICOM series folder: the work of ``asdesk analyze PATH``.

    Parameters
    ----------
    path : str or Path
        A single-frame image file (DICOM with or without extension, PNG, JPEG, TIFF) → one
        :class:`~asdesk.core.AnalysisResult`; a multi-frame DICOM file or a folder holding one DICOM series →
        a :class:`~asdesk.core.SeriesResult` with per-slice results and the study-level result.
    model_id : str, optional
        Model pack id (``--model``). Default: the pack whose card lists the first image's modality and body
        part (:func:`asdesk.inference.find_pack`).
    operating_point : str, optional
        ``"high_sensitivity"``, ``"balanced"`` or ``"high_specificity"``; default the card's default.
    gradcam : bool
        Compute the Grad-CAM heat map and overlay of every image.
    progress : ProgressSink, optional
        Reading (for a folder) and then classification are reported as two ``start``/``finish`` rounds.
    cancel : CancelToken, optional
        Checked between files and between batches.
    engines : EngineCache, optional
        Loaded models; default :func:`~asdesk.tasks.engines.default_engines`.
    force : bool
        Override the gates' refusals (``--force``): results are marked as outside validated use.

    Returns
    -------
    AnalysisResult or SeriesResult
        Images outside what the model was made for are refused (``result.refused``), not judged.

    Raises
    ------
    ReadError
        The path is missing, not an image, or a folder without a readable image.
    ModelNotFoundError
        No pack has ``model_id`` or covers the image's modality and body part.
    CardError
        The pack is broken or its model file does not match its card's SHA-256.
    CancelledError
        ``cancel`` was set.
    """
    records, errors, is_series, read_ms, cache = _read_for_analysis(path, progress, cancel, engines)
    engine = cache.select(records[0], model_id)
    return _analyze_read(path, records, errors, is_series, read_ms, engine, operating_point, gradcam, progress,
                         cancel, force)


def analyze_path_each(
    path: str | Path,
    model_id: str | None = None,
    operating_point: str | None = None,
    gradcam: bool = True,
    progress: ProgressSink | None = None,
    cancel: CancelToken | None = None,
    engines: EngineCache | None = None,
    force: bool = False,
) -> list[AnalysisResult | SeriesResult]:
    """:func:`analyze_path` with every pack made for the image when none is named: the work of ``asdesk analyze``.

    When several bundled packs accept the image (e.g. ``knee-xray-oa`` and ``knee-xray-osteoporosis`` both take
    knee radiographs, for different findings), each analyses it and each result is returned, so that neither
    finding silently replaces the other. The path is read once.

    Parameters
    ----------
    path, model_id, operating_point, gradcam, progress, cancel, engines, force
        As :func:`analyze_path`.

    Returns
    -------
    list of AnalysisResult or SeriesResult
        One per pack, in pack-id order; exactly one when ``model_id`` is given or one pack accepts the image.

    Raises
    ------
    ReadError, ModelNotFoundError, NoPackAcceptsError, CardError, CancelledError
        As :func:`analyze_path`.
    """
    from asdesk.tasks.gates import packs_for_each

    records, errors, is_series, read_ms, cache = _read_for_analysis(path, progress, cancel, engines)
    if model_id:
        chosen = [cache.select(records[0], model_id)]
    else:
        packs, _errors = cache.packs()
        chosen = [cache.engine_for_pack(pack) for pack in packs_for_each(records[0].metadata, packs)]
    return [_analyze_read(path, records, errors, is_series, read_ms, engine, operating_point, gradcam, progress,
                          cancel, force) for engine in chosen]


def _read_for_analysis(path: str | Path, progress: ProgressSink | None, cancel: CancelToken | None,
                       engines: EngineCache | None,
                       ) -> tuple[list[ImageRecord], list[str], bool, float, EngineCache]:
    """The first half of :func:`analyze_path`: read the path (records, errors, whether it is a series), the
    reading time per image in ms, and the engine cache to use."""
    started = time.perf_counter()
    records, errors, is_series = read_path(path, progress=progress, cancel=cancel)
    read_ms = (time.perf_counter() - started) * 1000.0 / max(1, len(records))
    for error in errors:
        LOGGER.warning("not analysed: %s", error)
    _check(cancel)
    return list(records), list(errors), is_series, read_ms, engines or default_engines()


def _analyze_read(path: str | Path, records: Sequence[ImageRecord], errors: Sequence[str], is_series: bool,
                  read_ms: float, engine: InferenceEngine, operating_point: str | None, gradcam: bool,
                  progress: ProgressSink | None, cancel: CancelToken | None,
                  force: bool) -> AnalysisResult | SeriesResult:
    """Classify images already read from ``path`` with one engine (the second half of :func:`analyze_path`)."""
    LOGGER.info(
        "analysing %s (%d image(s)) with %s %s on %s",
        Path(path).name,
        len(records),
        engine.card.id,
        engine.card.version,
        getattr(engine, "device", "?"),
    )
    sink = progress or NullProgress()
    label = f"Analysing {len(records)} image(s) with {engine.card.id}"
    sink.start(len(records), label)
    try:
        slices = _classify(engine, records, operating_point, gradcam, sink, cancel, read_ms, force)
    finally:
        sink.finish()
    if not is_series:
        return slices[0]
    return series_result(slices, engine.card, errors)
