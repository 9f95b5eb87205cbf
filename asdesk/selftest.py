"""``asdesk --self-test``: analyse the bundled sample headless and check every part of the flow.

The self-test is what an installer (``installer/build.sh``) and a support call run to know that an
installation works: it finds ``resources/`` and ``models/`` exactly as the program does (a source checkout or
a frozen bundle, :func:`asdesk.core.paths.install_root`), checks that the DICOM decoder plugins load, imports
the model runtime (ONNX Runtime for packs with ``model.onnx``, else TensorFlow), analyses the bundled sample
radiograph through :func:`asdesk.tasks.analyze_path` (the same call as ``asdesk analyze``), writes a PDF
report with :func:`asdesk.report.write_pdf_report` into a temporary folder, and checks the result. No window
is opened; Qt runs offscreen on Linux unless a platform is chosen.

It prints one summary line (the only output besides an error line) and returns an exit status.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import asdesk
from asdesk.core import AnalysisResult, AsdeskError, ModelNotFoundError
from asdesk.core.logsetup import native_stderr_silenced
from asdesk.core.paths import install_root, resources_dir

if TYPE_CHECKING:
    from asdesk.tasks import EngineCache

LOGGER = logging.getLogger(__name__)

SAMPLE_NAME = "knee-kl3-9023348L.png"
"""The bundled sample radiograph (``resources/samples``) the self-test analyses."""
PREFERRED_MODEL_ID = "knee-xray-oa"
"""The pack used for the sample when it is installed; otherwise any pack whose card accepts the sample."""
EXIT_OK = 0
EXIT_FAILED = 2

# Transfer syntax -> the pydicom plugin that a bundled decoder library provides (pylibjpeg's come through
# package entry points, so a bundle without their metadata would silently lose them).
REQUIRED_DECODERS: tuple[tuple[str, str, str], ...] = (
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 lossless", "pylibjpeg"),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS lossless", "pyjpegls"),
    ("1.2.840.10008.1.2.5", "RLE lossless", "pylibjpeg"),
    ("1.2.840.10008.1.2.4.70", "JPEG lossless", "gdcm"),
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class SelfTestError(AsdeskError):
    """A self-test check failed; the message says which and what to do."""


def sample_path() -> Path:
    """The bundled sample radiograph, ``<install root>/resources/samples/knee-kl3-9023348L.png``.

    Returns
    -------
    Path

    Raises
    ------
    SelfTestError
        The file is missing (a bundle built without ``resources/``).
    """
    path = resources_dir() / "samples" / SAMPLE_NAME
    if not path.is_file():
        raise SelfTestError(
            f"the bundled sample {path} is missing (install root {install_root()}); the installation is "
            "incomplete: rebuild it with installer/build.sh or reinstall asdesk")
    return path


def check_dicom_decoders() -> list[str]:
    """Check that pydicom finds the bundled decoder plugins (:data:`REQUIRED_DECODERS`).

    Returns
    -------
    list of str
        ``"<transfer syntax>: <plugin>, ..."`` for each checked transfer syntax.

    Raises
    ------
    SelfTestError
        A plugin is not available (its library or its package metadata is missing from the bundle).
    """
    from pydicom.pixels import get_decoder

    found = []
    for uid, name, plugin in REQUIRED_DECODERS:
        decoder = get_decoder(uid)
        available = tuple(decoder.available_plugins)
        if plugin not in available:
            missing = "; ".join(decoder.missing_dependencies) or "no detail"
            raise SelfTestError(
                f"the {plugin!r} decoder for {name} DICOM ({uid}) is not available (available: "
                f"{', '.join(available) or 'none'}; {missing}); the decoder library or its package metadata "
                "is missing from this installation: reinstall asdesk")
        found.append(f"{name}: {', '.join(available)}")
    return found


WINDOW_MODULES: tuple[str, ...] = ("asdesk.gui.app", "asdesk.gui.main_window", "asdesk.gui.about")
"""Modules of the window that the self-test imports (no window is created) to prove the bundle can show it."""


def check_window_modules() -> None:
    """Import the window's modules (Qt widgets, pyqtgraph) without creating a window.

    Raises
    ------
    SelfTestError
        A module or a library it needs is missing from the installation.
    """
    import importlib

    for name in WINDOW_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise SelfTestError(
                f"the window cannot start: importing {name} failed ({error}); a library is missing from this "
                "installation: reinstall asdesk") from error


def choose_model(engines: EngineCache, model_id: str | None = None) -> str | None:
    """The pack id the sample is analysed with.

    Parameters
    ----------
    engines : EngineCache
        The packs found.
    model_id : str, optional
        A pack id to use; it must exist.

    Returns
    -------
    str or None
        ``model_id``; else :data:`PREFERRED_MODEL_ID` when installed; else ``None`` (the pack whose card
        accepts the sample's modality and body part is chosen, as for ``asdesk analyze``).

    Raises
    ------
    SelfTestError
        ``model_id`` is not installed, or no model pack is installed at all.
    """
    from asdesk.tasks.packs import pack_directories as default_pack_directories

    packs, errors = engines.packs()
    if not packs:
        searched = engines.directories or default_pack_directories()
        broken = f"; broken packs: {'; '.join(str(e) for e in errors)}" if errors else ""
        raise SelfTestError(
            f"no model pack is installed (searched {' and '.join(str(d) for d in searched)}){broken}; "
            "rebuild the bundle with the packs in models/ or copy a pack into the user model folder")
    if model_id:
        try:
            return engines.find(pack_id=model_id).card.id
        except ModelNotFoundError as error:
            raise SelfTestError(f"{error}; installed packs: {', '.join(p.card.id for p in packs)}") from error
    try:
        return engines.find(pack_id=PREFERRED_MODEL_ID).card.id
    except ModelNotFoundError:
        return None


def _check_result(result: AnalysisResult, report: Path) -> None:
    if result.refused and result.model.pack_id == PREFERRED_MODEL_ID:
        raise SelfTestError(f"the bundled knee sample was refused by {result.model.pack_id}: "
                            f"{result.gate.text(result.model.pack_id)}; the pack's gates are broken: reinstall asdesk")
    probability = float(result.prediction.probability)
    if not 0.0 <= probability <= 1.0:  # also false for NaN
        raise SelfTestError(f"the model returned probability {probability!r}, expected a number in [0, 1]")
    model = result.model
    if not (model.pack_id and model.version and _SHA256.fullmatch(model.sha256 or "")):
        raise SelfTestError(
            f"the result does not name its model pack (id {model.pack_id!r}, version {model.version!r}, "
            f"sha256 {model.sha256!r}); every result must name them")
    if result.heatmap is None or result.overlay is None:
        raise SelfTestError("the Grad-CAM heat map was not computed")
    if not report.is_file() or report.stat().st_size == 0:
        raise SelfTestError(f"the PDF report {report} was not written or is empty")
    with open(report, "rb") as handle:
        head = handle.read(5)
    if head != b"%PDF-":
        raise SelfTestError(f"{report} is not a PDF (it starts with {head!r})")


def _prepare_environment() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def run_self_test(
    model_id: str | None = None,
    output_dir: str | Path | None = None,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> int:
    """Analyse the bundled sample headless, write a PDF report and check both.

    Checks, in order: the sample exists under ``resources/samples``; pydicom's JPEG 2000, JPEG-LS, RLE and
    JPEG-lossless decoder plugins are available; the window's modules import (:data:`WINDOW_MODULES`; no window
    is created); a model pack is installed; :func:`asdesk.tasks.analyze_path`
    returns one image result with a probability in [0, 1], a Grad-CAM map and the pack's id, version and
    SHA-256 (the engine has checked the SHA-256 of ``model.keras`` against the card); the PDF written by
    :func:`asdesk.report.write_pdf_report` exists, is not empty and starts with ``%PDF``.

    Parameters
    ----------
    model_id : str, optional
        The pack to use. Default: ``knee-xray-oa`` when installed, else the pack whose card accepts the
        sample (a raster image).
    output_dir : str or Path, optional
        Where the PDF report ``asdesk-self-test.pdf`` is written and kept; the folder must exist. Default: a
        temporary folder, deleted afterwards.
    stream : file, optional
        Where the summary line goes; default ``sys.stdout``. Failures go to ``sys.stderr``.
    clock : callable
        Returns seconds; used for the timings in the summary.

    Returns
    -------
    int
        0 when every check passed (one line ``asdesk self-test: OK: ...`` naming the device, the pack, its
        version and hash, the probability and the timings); 2 otherwise (one line
        ``asdesk self-test: FAILED: <what failed and what to do>`` on stderr; the traceback goes to the log
        file).
    """
    started = clock()
    out = stream or sys.stdout
    _prepare_environment()
    try:
        with tempfile.TemporaryDirectory(prefix="asdesk-selftest-") as scratch:
            folder = Path(output_dir) if output_dir is not None else Path(scratch)
            summary = _run(model_id, folder, started, clock)
    except Exception as error:  # noqa: BLE001 - any failure is a failed self-test, reported in one line
        LOGGER.info("self-test failed", exc_info=True)
        message = " ".join(str(error).split()) or "no message"
        if not isinstance(error, AsdeskError):
            message = f"{type(error).__name__}: {message}"
        print(f"asdesk self-test: FAILED: {message}", file=sys.stderr)
        return EXIT_FAILED
    print(summary, file=out)
    out.flush()
    return EXIT_OK


def _run(model_id: str | None, folder: Path, started: float, clock: Callable[[], float]) -> str:
    from asdesk.report import write_pdf_report
    from asdesk.tasks import EngineCache, analyze_path
    from asdesk.tasks.engines import configure_device

    frozen = bool(getattr(sys, "frozen", False))
    LOGGER.info("self-test of asdesk %s (%s) in %s", asdesk.__version__, "frozen" if frozen else "source",
                install_root())
    if not folder.is_dir():
        raise SelfTestError(f"the output folder {folder} does not exist; create it first")
    sample = sample_path()
    decoders = check_dicom_decoders()
    LOGGER.info("DICOM decoders: %s", "; ".join(decoders))
    check_window_modules()
    engines = EngineCache()
    chosen = choose_model(engines, model_id)
    with native_stderr_silenced(not logging.getLogger("asdesk").isEnabledFor(logging.DEBUG)):
        device = configure_device()
    runtime_ready = clock()
    result = analyze_path(sample, model_id=chosen, gradcam=True, engines=engines)
    analysed = clock()
    if not isinstance(result, AnalysisResult):
        raise SelfTestError(f"the sample was read as a series of {len(result.slices)} images, expected one image")
    card = engines.get(result.model.pack_id).card
    report = write_pdf_report(folder / "asdesk-self-test.pdf", result, card.raw,
                              operating_point_note="self-test of the bundled sample")
    _check_result(result, report)
    finished = clock()
    model = result.model
    prediction = result.prediction
    LOGGER.info("self-test passed: %s %s on %s, probability %.4f", model.pack_id, model.version, device,
                prediction.probability)
    return (
        f"asdesk self-test: OK: asdesk {asdesk.__version__} ({'frozen' if frozen else 'source'}), device "
        f"{device}, model {model.pack_id} {model.version} sha256 {model.sha256[:12]}, sample {sample.name}: "
        f"probability {prediction.probability:.3f} ({prediction.finding}, threshold {prediction.threshold:.3f}), "
        f"PDF {report.stat().st_size} bytes, {len(decoders)} DICOM decoders and the window modules checked; "
        f"times: runtime "
        f"{runtime_ready - started:.1f} s, model + analysis {analysed - runtime_ready:.1f} s, total "
        f"{finished - started:.1f} s"
    )


def summary_fields(line: str) -> dict[str, Any]:
    """Parse the fields of a summary line (for tests and scripts that check an installation).

    Parameters
    ----------
    line : str
        A line printed by :func:`run_self_test`.

    Returns
    -------
    dict
        ``ok`` (bool), and when present ``device``, ``model``, ``version``, ``sha256`` (12 hex digits),
        ``probability`` (float), ``pdf_bytes`` (int).
    """
    fields: dict[str, Any] = {"ok": line.startswith("asdesk self-test: OK")}
    patterns = {
        "device": r"device (.+?), model",
        "model": r"model (\S+) ",
        "version": r"model \S+ (\S+) sha256",
        "sha256": r"sha256 ([0-9a-f]{12})",
        "probability": r"probability ([0-9.]+)",
        "pdf_bytes": r"PDF (\d+) bytes",
    }
    for key, pattern in patterns.items():
        match = re.search(pattern, line)
        if match:
            value: Any = match.group(1)
            if key == "probability":
                value = float(value)
            elif key == "pdf_bytes":
                value = int(value)
            fields[key] = value
    return fields
