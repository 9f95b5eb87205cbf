"""The ``asdesk`` command: ``analyze``, ``screen``, ``train``, ``evaluate``, ``models``, ``sign-pack``; no
subcommand opens the window.

This module parses arguments, shows progress with tqdm on stderr and prints results; the work itself is
done by :mod:`asdesk.tasks` (and :mod:`asdesk.training`), exactly as the window does it. Every
:class:`~asdesk.core.AsdeskError` ends the command with one line ``asdesk: error: <message>`` on stderr and
exit status 2, never a traceback (unless ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import asdesk
from asdesk.core import AnalysisResult, AsdeskError, ModelNotFoundError, ReadError, SeriesResult
from asdesk.core.formatting import format_probability, probability_versus_threshold
from asdesk.core.logsetup import native_stderr_silenced
from asdesk.core.performance import chance_warning, held_out_evidence, measured_auc
from asdesk.core.settings import OPERATING_POINT_NAMES

if TYPE_CHECKING:
    from asdesk.tasks import EngineCache

LOGGER = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_ERROR = 2
EXIT_REFUSED = 3
"""``asdesk analyze``: at least one image was refused (outside what its model was validated for)."""
EXIT_INTERRUPTED = 130
EXIT_SOME_FAILED = 3  # asdesk screen: finished, but some files have error rows

SAMPLE_MODEL_ID = "knee-xray-oa"
"""The pack the bundled sample (a knee radiograph) is analysed with when it is installed."""
_SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")


# ---------------------------------------------------------------------------------------------------------
# progress
class TqdmProgress:
    """A :class:`~asdesk.core.ProgressSink` drawing a tqdm progress bar on stderr.

    Parameters
    ----------
    enabled : bool
        False draws nothing (``--quiet``).
    unit : str
        Unit shown after the counts, e.g. ``"img"``.
    stream : file, optional
        Default ``sys.stderr``.
    """

    def __init__(self, enabled: bool = True, unit: str = "img", stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.unit = unit
        self.stream = stream
        self._bar: Any = None

    def start(self, total: int | None, label: str = "") -> None:
        """Open a new bar (closing a previous one)."""
        self.finish()
        if not self.enabled:
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            desc=label,
            unit=self.unit,
            file=self.stream or sys.stderr,
            dynamic_ncols=True,
            leave=False,
            mininterval=0.25,
        )

    def advance(self, n: int = 1, message: str = "") -> None:
        """Move the bar by ``n``; ``message`` (a file name) is shown after it."""
        if self._bar is None:
            return
        if message:
            self._bar.set_postfix_str(message[-40:], refresh=False)
        self._bar.update(n)

    def finish(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---------------------------------------------------------------------------------------------------------
# parser
def build_parser() -> argparse.ArgumentParser:
    """The ``asdesk`` argument parser with all subcommands.

    Returns
    -------
    argparse.ArgumentParser
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log at DEBUG level and show tracebacks",
    )
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="no progress bars")

    parser = argparse.ArgumentParser(
        prog="asdesk",
        description=(
            "Offline diagnostic workstation for ankylosing spondylitis and related spine and joint "
            "disease on MRI and X-ray. " + asdesk.INTENDED_USE + " Without a command, opens the "
            "window."
        ),
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"asdesk {asdesk.__version__}")
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="analyse the bundled sample headless, write a PDF report to a temporary folder, check both and "
        "exit (0: passed, 2: failed)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    analyze = commands.add_parser(
        "analyze",
        parents=[common],
        help="analyse image files or DICOM series folders",
        description=(
            "Analyse image files (DICOM with or without extension, PNG, JPEG, TIFF) or folders "
            "holding one DICOM series, and print the finding, its probability and the operating "
            "point. Without PATH, analyses the bundled sample radiograph."
        ),
    )
    analyze.add_argument("paths", nargs="*", metavar="PATH", help="image file or DICOM series folder")
    analyze.add_argument(
        "--model",
        metavar="ID",
        help="model pack id (see 'asdesk models'); default: chosen by the image's modality and body part",
    )
    analyze.add_argument(
        "--operating-point",
        choices=OPERATING_POINT_NAMES,
        help="decision threshold to use (default: the model card's)",
    )
    analyze.add_argument(
        "--report",
        metavar="PDF",
        type=Path,
        help="write a PDF report (with several PATHs: one per PATH, numbered)",
    )
    analyze.add_argument(
        "--dicom-out",
        metavar="DIR",
        type=Path,
        help="also write DICOM results a PACS can store into DIR (created if missing): a Secondary Capture per "
        "analysed image (heat map and finding burned in) and a Structured Report (TID 1500) of the finding, in "
        "the source's study (a new study with a placeholder patient for PNG/JPEG/TIFF)",
    )
    analyze.add_argument(
        "--json", action="store_true", help="print one JSON object per PATH (JSON Lines) instead of text"
    )
    analyze.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM heat map")
    analyze.add_argument(
        "--force",
        action="store_true",
        help="give a finding even for an image the model's gates refuse (marked as outside validated use "
        "everywhere it appears); exit status 3 means an image was refused",
    )
    analyze.set_defaults(handler=command_analyze)

    screen = commands.add_parser(
        "screen",
        parents=[common],
        help="screen a folder into a CSV (resumable)",
        description=(
            "Analyse every image under FOLDER (DICOM series and image files) and append one CSV row "
            "per file as it goes: a result, an error, or 'skipped: not an image (...)'; a DICOM series "
            "also gets a study row (row_kind 'study') by its model card's study rule. Run the same "
            "command again to resume an interrupted run (files with an error row are not retried unless "
            "--retry-errors). One process at a time may write a CSV."
        ),
        epilog=(
            "exit status: 0 every image analysed (files that hold no image are listed as skipped); "
            "3 finished, but some files (or series) have error rows in the CSV; 2 nothing screened (no "
            "image in FOLDER, bad path, CSV in use by another process, unknown model); 130 interrupted "
            "(resume by running the same command)"
        ),
    )
    screen.add_argument("folder", metavar="FOLDER", type=Path)
    screen.add_argument("--csv", required=True, type=Path, metavar="CSV", help="the screening CSV (appended)")
    screen.add_argument(
        "--model",
        metavar="ID",
        help="model pack id for every image; default: chosen per image by modality and body part",
    )
    screen.add_argument("--reports", metavar="DIR", type=Path, help="also write a PDF report per image here")
    screen.add_argument(
        "--operating-point",
        choices=OPERATING_POINT_NAMES,
        help="decision threshold to use (default: the model card's)",
    )
    screen.add_argument("--batch-size", type=int, default=16, help="images classified together (default 16)")
    screen.add_argument(
        "--retry-errors",
        action="store_true",
        help="analyse again the files whose row in the CSV is an error (default: a resumed run skips them)",
    )
    screen.set_defaults(handler=command_screen)

    from asdesk.training.arguments import add_evaluate_arguments, add_train_arguments

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a model pack on labelled data",
        description="Train a model pack on a labelled folder <root>/<label>/... or the SIJ STIR NIfTI set.",
    )
    add_train_arguments(train)
    train.set_defaults(handler=command_train)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="measure a model pack on a labelled folder it never saw",
        description="Score a model pack on a labelled folder: AUC, sensitivity, specificity with 95% CIs.",
    )
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(handler=command_evaluate)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="export a model pack to ONNX for the lean runtime",
        description="Write PACK_DIR/model.onnx (the Grad-CAM layer's feature map and the probability) and "
        "PACK_DIR/onnx_head.npz beside model.keras, and the card's 'onnx' block with their SHA-256 and the "
        "parity with the Keras model measured on --data (decisions changed at each operating point must be 0). "
        "Needs the training extra (TensorFlow, tf2onnx). After exporting a bundled pack run "
        "'python -m asdesk.inference.pins --update'.",
    )
    export.add_argument("pack", type=Path, metavar="PACK_DIR", help="the pack folder (card.json and model.keras)")
    export.add_argument("--data", type=Path, default=None, metavar="PATH",
                        help="the pack's evaluation images: <root>/<label>/<image> or the SIJ STIR NIfTI folder")
    export.add_argument("--max-images", type=int, default=None, metavar="N", help="measure parity on N images only")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    export.set_defaults(handler=command_export)

    models = commands.add_parser(
        "models",
        parents=[common],
        help="list the installed model packs",
        description="List the bundled and the user's model packs, and broken ones.",
    )
    models.add_argument("--json", action="store_true", help="print the list as JSON")
    models.set_defaults(handler=command_models)

    sign = commands.add_parser(
        "sign-pack",
        parents=[common],
        help="sign a model pack's card with an Ed25519 key",
        description="Write DIR/card.sig: an Ed25519 signature over DIR/card.json (which states the SHA-256 of "
        "every file of the pack), made with a private key you keep outside any repository. Make a key with "
        "'python -m asdesk.inference.trust keygen KEY.pem'.",
    )
    sign.add_argument("pack", type=Path, metavar="DIR", help="the pack folder (card.json and model.keras)")
    sign.add_argument("--key", type=Path, required=True, metavar="PATH", help="the Ed25519 private key (PEM)")
    sign.set_defaults(handler=command_sign_pack)
    return parser


# ---------------------------------------------------------------------------------------------------------
# helpers
def _engines() -> EngineCache:
    from asdesk.tasks import default_engines

    cache = default_engines()
    cache.refresh()
    return cache


def prepare_runtime(args: argparse.Namespace, tensorflow: bool = False) -> str:
    """Import the runtime and choose the device (:func:`asdesk.tasks.engines.configure_device`), and log it.

    The lean runtime (ONNX Runtime) when it is installed and ``tensorflow`` is false, else TensorFlow, whose
    native start-up lines (oneDNN, CUDA probing) are discarded unless ``--debug`` is given.

    Returns
    -------
    str
        The device description, also logged.
    """
    from asdesk.tasks.engines import configure_device

    with native_stderr_silenced(not getattr(args, "debug", False)):
        device = configure_device(tensorflow=tensorflow)
    LOGGER.info("inference device: %s", device)
    return device


def _progress(args: argparse.Namespace) -> TqdmProgress:
    return TqdmProgress(enabled=not getattr(args, "quiet", False))


def bundled_sample() -> Path:
    """The bundled sample image analysed by ``asdesk analyze`` without PATH.

    Raises
    ------
    ReadError
        No sample is installed in ``resources/samples``.
    """
    from asdesk.core.paths import resources_dir

    folder = resources_dir() / "samples"
    samples = sorted(p for p in folder.glob("*") if p.suffix.lower() in _SAMPLE_SUFFIXES) if folder.is_dir() else []
    if not samples:
        raise ReadError(folder, "no bundled sample image found; give a PATH to analyse")
    return samples[0]


def _auc_text(card: Mapping[str, Any]) -> str:
    auc = measured_auc(card)
    return "not measured" if auc is None else auc.text()


def _model_block(card: Any, device: str) -> dict[str, Any]:  # noqa: ANN401 - a ModelCard
    raw = card.raw
    auc = measured_auc(raw)
    performance = raw.get("performance") or {}
    return {
        "id": card.id,
        "version": card.version,
        "sha256": card.sha256,
        "task": card.task,
        "architecture": card.architecture,
        "device": device,
        "auc": None if auc is None else {"value": auc.value, "ci95": [auc.low, auc.high]},
        "measured_on": performance.get("dataset", ""),
    }


def _gate_block(result: AnalysisResult) -> dict[str, Any]:
    gate = result.gate
    return {
        "accepted": gate.accepted,
        "refused": gate.refused,
        "overridden": gate.overridden,
        "reasons": list(gate.reasons),
        "content_distance": None if gate.distance is None else round(float(gate.distance), 3),
        "content_threshold": None if gate.threshold is None else round(float(gate.threshold), 3),
        "content_checked": gate.content_checked,
    }


def _image_block(result: AnalysisResult) -> dict[str, Any]:
    meta = result.record.metadata
    prediction = result.prediction
    refused = result.refused
    return {
        "file": str(meta.source),
        "frame": meta.frame_index,
        "instance_number": meta.instance_number,
        "slice_position_mm": meta.slice_position_mm,
        "modality": meta.modality,
        "body_part": meta.body_part,
        "refused": refused,
        "refusal": result.gate.text(result.model.pack_id) if result.gate.reasons else None,
        "probability": None if refused else round(float(prediction.probability), 6),
        "probability_calibrated": prediction.calibrated,
        "threshold": round(float(prediction.threshold), 6),
        "operating_point": prediction.operating_point,
        "positive": None if refused else bool(prediction.positive),
        "finding": None if refused else prediction.finding,
        "model_output_raw": None if prediction.raw_probability is None else round(prediction.raw_probability, 6),
        "gate": _gate_block(result),
        "timings_ms": {key: round(float(value), 1) for key, value in result.timings_ms.items()},
    }


def result_to_json(
    path: Path,
    result: AnalysisResult | SeriesResult,
    card: Any,
    device: str,  # noqa: ANN401
    report: Path | None = None,
    dicom: Any = None,  # noqa: ANN401 - asdesk.report.dicom_export.DicomExport
    decision: Any = None,  # noqa: ANN401 - asdesk.core.reader_decision.ReaderDecision
) -> dict[str, Any]:
    """The machine-readable result of ``asdesk analyze --json`` for one PATH.

    Parameters
    ----------
    path : Path
        What was analysed.
    result : AnalysisResult or SeriesResult
    card : ModelCard
        The model's card.
    device : str
        Where the model ran.
    report : Path, optional
        The PDF written.
    dicom : DicomExport, optional
        The DICOM files written (``--dicom-out``).
    decision : ReaderDecision, optional
        The reader's saved conclusion on the case.

    Returns
    -------
    dict
        ``{"input", "kind": "image"|"series", "images": [{"file", "frame", "instance_number", "probability",
        "finding", "threshold", "operating_point", ...}], "study": {...} or None, "model": {...},
        "errors": [...], "report", "dicom": {"secondary_captures", "structured_report", "study_instance_uid",
        "new_study"} or None, "reader_decision": {...} or None, "intended_use"}``.
    """
    slices = result.slices if isinstance(result, SeriesResult) else (result,)
    study = None
    errors: list[str] = []
    if isinstance(result, SeriesResult):
        prediction = result.study_prediction
        study = {
            "refused": result.refused,
            "score": None if result.refused else round(float(result.study_probability), 6),
            "probability": None if result.refused else round(float(result.study_probability), 6),
            "threshold": round(float(prediction.threshold), 6),
            "operating_point": prediction.operating_point,
            "positive": None if result.refused else bool(prediction.positive),
            "finding": None if result.refused else prediction.finding,
            "rule": result.study_rule,
            "n_slices": len(result.slices),
            "n_refused": result.n_refused,
        }
        errors = list(result.errors)
    point = slices[0].prediction.operating_point if slices else card.default_operating_point
    evidence = held_out_evidence(card.raw, point)
    return {
        "input": str(path),
        "kind": "series" if isinstance(result, SeriesResult) else "image",
        "images": [_image_block(item) for item in slices],
        "study": study,
        "model": {**_model_block(card, device), "origin": getattr(slices[0].model, "origin", "")},
        "held_out": {
            "operating_point": evidence.operating_point,
            "sensitivity": None if evidence.sensitivity is None else vars(evidence.sensitivity),
            "specificity": None if evidence.specificity is None else vars(evidence.specificity),
            "protocol": evidence.protocol,
            "thresholds_chosen_on": evidence.thresholds_chosen_on,
            "selection": evidence.selection,
            "warning": evidence.chance_warning,
        },
        "errors": errors,
        "report": None if report is None else str(report),
        "dicom": None if dicom is None else {
            "secondary_captures": [str(item) for item in dicom.secondary_captures],
            "structured_report": str(dicom.structured_report),
            "study_instance_uid": dicom.study_instance_uid,
            "new_study": dicom.new_study,
        },
        "reader_decision": None if decision is None else decision.to_dict(),
        "intended_use": asdesk.INTENDED_USE,
    }


def _first_model(result: AnalysisResult | SeriesResult) -> Any:  # noqa: ANN401 - a ModelInfo
    return (result.slices[0] if isinstance(result, SeriesResult) else result).model


def _print_result(
    path: Path,
    result: AnalysisResult | SeriesResult,
    card: Any,
    device: str,  # noqa: ANN401
    report: Path | None,
    out: TextIO,
) -> None:
    if isinstance(result, SeriesResult):
        first = result.slices[0].record.metadata
        described = ", ".join(v for v in (first.modality, first.body_part, first.series_description) if v)
        print(
            f"{path}: series of {len(result.slices)} image(s)" + (f" ({described})" if described else ""),
            file=out,
        )
        print(f"  {'slice':>5}  {'instance':>8}  {'position mm':>11}  {'probability':>11}  finding", file=out)
        for index, item in enumerate(result.slices, start=1):
            meta = item.record.metadata
            position = "" if meta.slice_position_mm is None else f"{meta.slice_position_mm:.1f}"
            instance = "" if meta.instance_number is None else str(meta.instance_number)
            shown = "-" if item.refused else format_probability(item.prediction.probability)
            print(f"  {index:>5}  {instance:>8}  {position:>11}  {shown:>11}  {_finding_line(item)}", file=out)
        slice_prediction = result.slices[0].prediction
        print(
            f"  slice threshold {format_probability(slice_prediction.threshold)} "
            f"(operating point {slice_prediction.operating_point})",
            file=out,
        )
        study = result.study_prediction
        if result.refused:
            print(f"  study finding: none: {result.n_refused} of {len(result.slices)} slices were refused, so the "
                  "series is outside what the model was validated for (--force gives a result marked so)", file=out)
        else:
            overridden = sum(1 for item in result.slices if item.gate.overridden)
            mark = f" [OUTSIDE VALIDATED USE: {overridden} refused slice(s) overridden]" if overridden else ""
            print(f"  study finding: {study.finding}{mark}", file=out)
            score = probability_versus_threshold(result.study_probability, study.threshold, study.positive)
            print(f"  study score {score}; rule: {result.study_rule}", file=out)
        for error in result.errors:
            print(f"  not read: {error}", file=out)
    else:
        prediction = result.prediction
        print(f"{path}", file=out)
        print(f"  finding: {_finding_line(result)}", file=out)
        if not result.refused:
            kind = "calibrated probability" if prediction.calibrated else "probability"
            relation = probability_versus_threshold(prediction.probability, prediction.threshold, prediction.positive)
            print(
                f"  {kind} {relation} (operating point {prediction.operating_point})",
                file=out,
            )
    if not result.refused:
        point = (result.slices[0] if isinstance(result, SeriesResult) else result).prediction.operating_point
        for line in held_out_evidence(card.raw, point).lines()[:1]:
            print(f"  {line}", file=out)
    origin = getattr(_first_model(result), "origin", "")  # bundled / user-installed (signed or not)
    print(
        f"  model: {card.id} {card.version} (sha256 {card.sha256[:12]}{'; ' + origin if origin else ''}), "
        f"{card.architecture}, on {device}; measured AUC {_auc_text(card.raw)}",
        file=out,
    )
    warning = chance_warning(card.raw)
    if warning:
        print(f"  WARNING: {warning}", file=out)
    if report is not None:
        print(f"  report: {report}", file=out)


def _finding_line(result: AnalysisResult) -> str:
    """The finding as printed: the refusal for a refused image, the overridden mark for a forced one."""
    if result.refused:
        return "REFUSED: " + result.gate.text(result.model.pack_id)
    if result.gate.overridden:
        return f"{result.prediction.finding} [OUTSIDE VALIDATED USE: {'; '.join(result.gate.reasons)}]"
    return result.prediction.finding


def _any_refused(result: AnalysisResult | SeriesResult) -> bool:
    items = result.slices if isinstance(result, SeriesResult) else (result,)
    return any(item.refused for item in items)


def _report_path(report: Path, index: int, path: Path, several: bool) -> Path:
    if not several:
        return report
    suffix = report.suffix or ".pdf"
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (path.name or "input"))
    return report.with_name(f"{report.stem}-{index}-{name}{suffix}")


def _operating_point_note(result: AnalysisResult | SeriesResult, chosen: str | None) -> str:
    prediction = result.slices[0].prediction if isinstance(result, SeriesResult) else result.prediction
    origin = "chosen with --operating-point" if chosen else "the model card's default"
    return f"{prediction.operating_point}, threshold {format_probability(prediction.threshold)} ({origin})"


def _write_dicom(folder: Path, result: AnalysisResult | SeriesResult, card: Mapping[str, Any],
                 decision: Any, index: int | None) -> Any:  # noqa: ANN401 - ReaderDecision, DicomExport
    """``--dicom-out``: create the folder and write the case's Secondary Captures and Structured Report."""
    from asdesk.report import ReportWriteError
    from asdesk.tasks.dicom_export import export_dicom, export_prefix

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ReportWriteError(folder, f"cannot create the folder ({error.strerror or error}); choose another "
                                       "--dicom-out folder") from error
    prefix = export_prefix(result)
    return export_dicom(result, card, folder, decision=decision,
                        prefix=f"{index}-{prefix}" if index is not None else prefix)


# ---------------------------------------------------------------------------------------------------------
# commands
def command_analyze(args: argparse.Namespace) -> int:
    """``asdesk analyze``: see ``asdesk analyze --help``."""
    from asdesk.tasks import NoPackAcceptsError, analyze_path_each

    out = sys.stdout
    engines = _engines()
    model_id = args.model
    paths = [Path(p) for p in args.paths]
    if len(paths) == 1 and not paths[0].exists():
        raise ReadError(paths[0], "no such file or folder; check the path")
    prepare_runtime(args)
    if not paths:
        sample = bundled_sample()
        print(
            f"asdesk: no PATH given: analysing the bundled sample {sample} (see {sample.parent / 'LICENSE.md'})",
            file=sys.stderr if args.json else out,
        )
        paths = [sample]
        if model_id is None:
            try:
                model_id = engines.find(pack_id=SAMPLE_MODEL_ID).card.id
            except ModelNotFoundError:
                model_id = None
    several = len(paths) > 1
    failures = 0
    refusals = 0
    for index, path in enumerate(paths, start=1):
        try:
            results = analyze_path_each(
                path,
                model_id=model_id,
                operating_point=args.operating_point,
                gradcam=not args.no_gradcam,
                progress=_progress(args),
                engines=engines,
                force=args.force,
            )
        except NoPackAcceptsError as error:
            refusals += 1
            if args.json:
                print(json.dumps({"input": str(path), "kind": None, "refused": True, "refusal": str(error),
                                  "images": [], "study": None, "model": None, "errors": [],
                                  "intended_use": asdesk.INTENDED_USE}), file=out)
            else:
                print(f"{path}\n  REFUSED: {_one_line(error)}", file=out)
            continue
        except AsdeskError as error:
            if not several:
                raise
            failures += 1
            print(f"asdesk: error: {_one_line(error)}", file=sys.stderr)
            continue
        if len(results) > 1 and not args.json:
            print(f"{path}: {len(results)} model packs were made for this image, each for a different finding "
                  f"({', '.join(_result_pack_id(r) for r in results)}); each finding follows (choose one with "
                  "--model)", file=out)
        for result in results:
            first = result.slices[0] if isinstance(result, SeriesResult) else result
            # the explicit id when given: for ``user:<id>`` the card's id is the bundled pack's, another engine
            engine = engines.get(model_id or first.model.pack_id)
            device = str(getattr(engine, "device", ""))
            LOGGER.info("analysed %s with %s %s on %s", path.name, engine.card.id, engine.card.version, device)
            report = dicom = decision = None
            if args.report is not None or args.dicom_out is not None:
                from asdesk.tasks.dicom_export import reader_decision_for

                decision = reader_decision_for(result)  # the reader's conclusion saved in the window, if any
            if args.report is not None:
                from asdesk.report import write_pdf_report

                target = _report_path(args.report, index, path, several)
                if len(results) > 1:  # one report per finding: <name>-<pack id>.pdf
                    target = target.with_name(f"{target.stem}-{engine.card.id}{target.suffix or '.pdf'}")
                report = write_pdf_report(
                    target,
                    result,
                    engine.card.raw,
                    operating_point_note=_operating_point_note(result, args.operating_point),
                    reader_decision=decision,
                )
            if args.dicom_out is not None:
                dicom = _write_dicom(args.dicom_out, result, engine.card.raw, decision,
                                     index if several or len(results) > 1 else None)
            if args.json:
                print(json.dumps(result_to_json(path, result, engine.card, device, report, dicom, decision)),
                      file=out)
            else:
                _print_result(path, result, engine.card, device, report, out)
                if decision is not None and decision.decided:
                    print(f"  reader: {decision.summary()} ({decision.signed()})", file=out)
                if dicom is not None:
                    print(f"  DICOM: {len(dicom.secondary_captures)} secondary capture(s) and a structured report "
                          f"in {args.dicom_out}" + (" (new study: the input is not DICOM)" if dicom.new_study else ""),
                          file=out)
            refusals += int(_any_refused(result))
            out.flush()
    if not args.json:
        print(asdesk.INTENDED_USE, file=out)
    if failures:
        return EXIT_ERROR
    return EXIT_REFUSED if refusals else EXIT_OK


def _result_pack_id(result: Any) -> str:  # noqa: ANN401 - an AnalysisResult or SeriesResult
    first = result.slices[0] if isinstance(result, SeriesResult) else result
    return str(first.model.pack_id)


def command_screen(args: argparse.Namespace) -> int:
    """``asdesk screen``: see ``asdesk screen --help``."""
    from asdesk.tasks import ScreeningCancelledError, screen_folder

    if not args.folder.is_dir():
        raise ReadError(args.folder, "no such folder; give the folder to screen")
    if args.csv.parent and not args.csv.parent.exists():
        raise ReadError(args.csv.parent, "the folder of --csv does not exist; create it first")
    prepare_runtime(args)
    try:
        summary = screen_folder(
            args.folder,
            args.csv,
            model_id=args.model,
            operating_point=args.operating_point,
            reports_dir=args.reports,
            batch_size=args.batch_size,
            progress=_progress(args),
            engines=_engines(),
            retry_errors=args.retry_errors,
        )
    except ScreeningCancelledError as cancelled:
        summary = cancelled.summary
    except KeyboardInterrupt:
        print(
            f"asdesk: interrupted; the rows written so far are in {args.csv}: run the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(
        f"screened {args.folder}: {summary.n_files} file(s) or frame(s), {summary.n_found} image(s) found, "
        f"{summary.n_done} analysed, "
        f"{summary.n_errors} error(s), {summary.n_not_images} not an image, {summary.n_study_rows} study "
        f"row(s) ({summary.n_study_errors} without result), {summary.n_skipped_resumed} already in the CSV "
        f"(skipped{f', {summary.n_errors_before} of them errors' if summary.n_errors_before else ''}), "
        f"in {summary.elapsed_s:.1f} s ({summary.images_per_second:.1f} images/s)"
    )
    if summary.n_refused:
        print(f"refused: {summary.n_refused} image(s) outside what their model was validated for: no finding "
              "(status 'refused' in the CSV, with the reason)")
    print(f"CSV: {summary.csv_path}")
    if summary.reports:
        print(f"PDF reports: {len(summary.reports)} in {args.reports}")
    for message in summary.report_errors:
        print(f"asdesk: warning: report not written: {message}", file=sys.stderr)
    if summary.cancelled:
        print("asdesk: cancelled; run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary.failed:
        print(
            f"asdesk: {summary.n_errors + summary.n_errors_before} file(s) and {summary.n_study_errors} series "
            f"could not be analysed: see the 'error' column of {summary.csv_path}",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    return EXIT_OK


def command_models(args: argparse.Namespace) -> int:
    """``asdesk models``: list the model packs, verified (pins, signatures, every file's hash), and the refused ones.

    A pack that fails verification is listed as not usable, with the reason, never as in use. A user-installed
    pack with a bundled pack's id is listed as usable only explicitly, as ``user:<id>``.
    """
    from asdesk.tasks.packs import pack_directories as default_pack_directories
    from asdesk.tasks.packs import scan_packs

    scan = scan_packs(verify_hash=True)
    listed = [(pack, "in use") for pack in scan.packs]
    listed += [(pack, f"only with --model {pack.alias}") for pack in scan.alternates]
    if args.json:
        document = {
            "packs": [
                {
                    **_model_block(p.card, ""),
                    "selection_id": p.selection_id,
                    "origin": p.origin,
                    "origin_label": p.origin_label,
                    "signed_by": p.signer or None,
                    "usable": True,
                    "in_use": status == "in use",
                    "status": status,
                    "modalities": list(p.card.modalities),
                    "body_parts": list(p.card.body_parts),
                    "path": str(p.path),
                }
                for p, status in listed
            ],
            "refused": [
                {"id": problem.pack_id, "origin": problem.origin, "path": str(problem.path), "usable": False,
                 "in_use": False, "reason": problem.reason}
                for problem in scan.refused
            ],
            "notes": list(scan.notes),
            "broken": list(scan.errors),
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    if not listed:
        searched = ", ".join(str(d) for d in default_pack_directories())
        print(f"no usable model packs installed (searched {searched})")
    else:
        header = ("ID", "VERSION", "ARCHITECTURE", "MODALITIES / BODY PARTS", "AUC (95% CI)", "ORIGIN", "STATUS",
                  "SOURCE")
        rows = []
        for pack, status in listed:
            card = pack.card
            modalities = ",".join(m or "raster" for m in card.modalities) or "-"
            parts = ",".join(b for b in card.body_parts if b) or "any"
            rows.append((pack.selection_id, card.version, card.architecture, f"{modalities} / {parts}",
                         _auc_text(card.raw), pack.origin_label, status, str(pack.path.parent)))
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        print()
        for pack, _status in listed:
            measured = (pack.card.raw.get("performance") or {}).get("dataset", "")
            print(f"{pack.selection_id}: {pack.card.task}" + (f"; measured on {measured}" if measured else ""))
    if scan.refused or scan.notes:
        print("\nbroken or unused model packs:")
        for problem in scan.refused:
            print(f"  NOT USABLE: {problem.pack_id} ({problem.origin}): {problem.reason}")
        for note in scan.notes:
            print(f"  {note}")
    return EXIT_OK


def command_sign_pack(args: argparse.Namespace) -> int:
    """``asdesk sign-pack DIR --key KEY.pem``: write ``DIR/card.sig``, an Ed25519 signature over its card."""
    from asdesk.core import CardError
    from asdesk.tasks.packs import load_user_pack, sign_pack

    target = sign_pack(args.pack, args.key)
    print(f"wrote {target}")
    try:
        pack = load_user_pack(args.pack)
    except CardError as error:
        print(f"asdesk: warning: {_one_line(error)}; to have asdesk trust this key, add its public key to "
              "TRUSTED_KEYS in asdesk/inference/trust.py (python -m asdesk.inference.trust keygen prints it)",
              file=sys.stderr)
        return EXIT_OK
    print(f"{pack.card.id} {pack.card.version}: {pack.origin_label}")
    return EXIT_OK


def require_training_extra() -> None:
    """Check that the training extra's packages are installed before a long run starts.

    Raises
    ------
    AsdeskError
        TensorFlow, Keras, scikit-learn, nibabel, matplotlib or tf2onnx is missing (a runtime-only install,
        or the desktop bundle); the message says how to install them.
    """
    import importlib.util

    missing = [name for module, name in (("tensorflow", "tensorflow"), ("keras", "keras"),
                                         ("sklearn", "scikit-learn"), ("nibabel", "nibabel"),
                                         ("matplotlib", "matplotlib"), ("tf2onnx", "tf2onnx"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise AsdeskError(f"training, evaluation and export need {', '.join(missing)}, which this installation lacks "
                          "(the desktop bundle ships without them); in a source install run "
                          "pip install 'asdesk[train]'")


def command_train(args: argparse.Namespace) -> int:
    """``asdesk train``: handed to :func:`asdesk.training.train.main_train`."""
    require_training_extra()
    from asdesk.training.train import main_train

    prepare_runtime(args, tensorflow=True)
    return int(main_train(args, progress=_progress(args)) or 0)


def command_evaluate(args: argparse.Namespace) -> int:
    """``asdesk evaluate``: handed to :func:`asdesk.training.evaluate.main_evaluate`."""
    require_training_extra()
    from asdesk.training.evaluate import main_evaluate

    prepare_runtime(args, tensorflow=True)
    return int(main_evaluate(args, progress=_progress(args)) or 0)


def command_export(args: argparse.Namespace) -> int:
    """``asdesk export``: handed to :func:`asdesk.training.export.export_pack`."""
    require_training_extra()
    from asdesk.training.export import export_pack

    prepare_runtime(args, tensorflow=True)
    block = export_pack(args.pack, data=args.data, opset=args.opset, max_images=args.max_images,
                        progress=_progress(args))
    parity = block["parity"]
    print(f"wrote {Path(args.pack) / block['file']} (sha256 {block['sha256'][:12]}, {block['exporter']}, "
          f"opset {block['opset']})")
    if parity.get("n_images"):
        print(f"parity on {parity['n_images']} images: max |dp| {parity['max_abs_probability']}, max |d heat map| "
              f"{parity['max_abs_heatmap']}, max |d gate distance| {parity['max_abs_gate_distance']}, decisions "
              f"changed {parity['decisions_changed']}")
    else:
        print("parity not measured: give --data")
    return 0


def open_window(paths: Sequence[str] = ()) -> int:
    """Open the desktop window (no subcommand), loading ``paths`` (files or series folders) if given."""
    try:
        from asdesk.gui.app import run_gui
    except ImportError as error:
        LOGGER.info("window not available: %r", error)
        print(
            f"asdesk: error: the desktop window is not available in this installation ({error}); use a "
            "command instead, e.g. 'asdesk analyze' (see 'asdesk --help')",
            file=sys.stderr,
        )
        return EXIT_ERROR
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise ReadError(Path(missing[0]), "no such file or folder; check the path")
    return int(run_gui(list(paths)) or 0)


# ---------------------------------------------------------------------------------------------------------
# entry point
def _log_to_file_only(message: str, *arguments: object) -> None:
    """Log the exception being handled, with its traceback, to the log file but not to the console."""
    record = LOGGER.makeRecord(LOGGER.name, logging.ERROR, __file__, 0, message, arguments, sys.exc_info())
    for handler in logging.getLogger("asdesk").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``asdesk`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 success, 3 ``screen`` finished but some files have error rows, 1 unexpected
        internal error, 2 an error the user can fix (bad path, no
        model, bad arguments), 130 interrupted.
    """
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    window_paths: list[str] = []
    commands = {"analyze", "screen", "train", "evaluate", "export", "models", "sign-pack"}
    if arguments and not arguments[0].startswith("-") and arguments[0] not in commands:
        # ``asdesk PATH...``: open the window with those files or series folders.
        window_paths = [a for a in arguments if not a.startswith("-")]
        arguments = [a for a in arguments if a.startswith("-")]
    args = parser.parse_args(arguments)
    debug = bool(getattr(args, "debug", False))
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from asdesk.core.logsetup import configure_logging

    log_file = configure_logging(level=logging.DEBUG if debug else logging.INFO, console=True)
    handler = getattr(args, "handler", None)
    LOGGER.info("asdesk %s: %s", asdesk.__version__, args.command or ("self-test" if args.self_test else "window"))
    try:
        if args.self_test:
            if args.command or window_paths:
                parser.error("--self-test takes no command or PATH")
            from asdesk.selftest import run_self_test

            return run_self_test()
        if handler is None:
            return open_window(window_paths)
        return handler(args)
    except AsdeskError as error:
        if debug:
            raise
        LOGGER.info("command failed: %s", error)
        print(f"asdesk: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        if debug:
            raise
        LOGGER.info("command failed: %r", error)
        print(f"asdesk: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("asdesk: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            raise
        _log_to_file_only("internal error in 'asdesk %s'", args.command or "")
        print(
            f"asdesk: internal error: {type(error).__name__}: {_one_line(error)} (details in {log_file}; run "
            "again with --debug for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
