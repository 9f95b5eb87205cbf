"""The reader's decision on an AI finding, autosaved per case so that nothing is lost if the program closes.

A qualified reader confirms or overrides the AI finding of a case (agree; disagree: positive, negative or
indeterminate) and may add a note. The decision records the reader's name and the time, and what the AI said
when the reader decided (:class:`AiFindingRef`), so that the PDF report and the DICOM Structured Report can show
the AI finding and the reader's conclusion separately (IHE AI Results: the AI result and the human's conclusion
are different observations by different observers).

Every decision is written at once, atomically (a temporary file, then a rename), to one JSON file per case in
``<user data dir>/reader-decisions/`` (``$ASDESK_HOME/data/reader-decisions`` when set). A case is keyed by what
identifies its images wherever they are copied: the SOP Instance UID of a single DICOM file, the Series Instance
UID of a DICOM series, otherwise the SHA-256 of the file(s) (:func:`case_key`). Earlier versions of a decision are
kept in the file's ``history``.

Only the standard library is used (layer 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from asdesk.core.paths import user_data_dir
from asdesk.core.records import AnalysisResult, ImageMetadata, SeriesResult

LOGGER = logging.getLogger(__name__)

__all__ = [
    "CONCLUSIONS",
    "AiFindingRef",
    "ReaderDecision",
    "ReaderDecisionStore",
    "case_key",
    "decisions_dir",
    "file_sha256",
    "format_timestamp",
    "now_iso",
]

CONCLUSIONS = ("positive", "negative", "indeterminate")
"""What a reader can conclude. ``""`` stands for "not decided yet" (a note saved before the conclusion)."""
DECISION_SCHEMA_VERSION = 1
MAX_HISTORY = 100
"""Earlier versions of a decision kept in its file."""
_FOLDER_NAME = "reader-decisions"


def decisions_dir() -> Path:
    """``<user data dir>/reader-decisions`` (``$ASDESK_HOME/data/reader-decisions`` when set)."""
    return user_data_dir() / _FOLDER_NAME


def now_iso() -> str:
    """The local time now as ISO 8601 with its UTC offset, to the second (``2025-03-01T14:05:09+01:00``)."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def format_timestamp(value: str) -> str:
    """An ISO 8601 time as ``2025-03-01 14:05 (UTC+01:00)``; other text as it is; ``""`` for ``""``."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value or "")
    offset = moment.strftime("%z")
    zone = f" (UTC{offset[:3]}:{offset[3:5]})" if offset else ""
    return f"{moment:%Y-%m-%d %H:%M}{zone}"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as 64 lowercase hex digits.

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def case_key(metadata: Sequence[ImageMetadata]) -> str:
    """The key a reader's decision is saved under: what identifies the case's images wherever they are copied.

    Parameters
    ----------
    metadata : sequence of ImageMetadata
        Of every image of the case (one image, the frames of a multi-frame file, or the slices of a series).

    Returns
    -------
    str
        ``"sop-<SOPInstanceUID>"`` for one DICOM file (single- or multi-frame); ``"series-<SeriesInstanceUID>"``
        for a series of DICOM files sharing one Series Instance UID; otherwise ``"sha256-<hex>"``: the SHA-256 of
        the file (raster images, DICOM files without UIDs), or of the files' hashes in order for several files.

    Raises
    ------
    ValueError
        If ``metadata`` is empty.
    OSError
        If a file must be hashed and cannot be read.
    """
    if not metadata:
        raise ValueError("a case needs at least one image to be keyed")
    sources = list(dict.fromkeys(Path(item.source) for item in metadata))
    if len(sources) == 1 and metadata[0].sop_instance_uid:
        return f"sop-{metadata[0].sop_instance_uid}"
    series = {item.series_uid for item in metadata}
    if len(sources) > 1 and len(series) == 1 and metadata[0].series_uid:
        return f"series-{metadata[0].series_uid}"
    if len(sources) == 1:
        return f"sha256-{file_sha256(sources[0])}"
    combined = hashlib.sha256("".join(file_sha256(source) for source in sources).encode("ascii"))
    return f"sha256-{combined.hexdigest()}"


@dataclass(frozen=True)
class AiFindingRef:
    """What the AI said about a case when the reader decided.

    Attributes
    ----------
    finding : str
        The finding as shown (the card's positive or negative label), or the refusal text.
    positive : bool or None
        The AI's finding; ``None`` when it gave none (the image or series was refused).
    probability, threshold : float or None
        Calibrated probability (the study score for a series) and the threshold it was judged against.
    operating_point : str
    model_id, model_version, model_sha256 : str
        The model pack (IHE AI Results).
    level : str
        ``"image"`` or ``"study"``.
    """

    finding: str
    positive: bool | None
    probability: float | None = None
    threshold: float | None = None
    operating_point: str = ""
    model_id: str = ""
    model_version: str = ""
    model_sha256: str = ""
    level: str = "image"

    @classmethod
    def from_result(cls, result: AnalysisResult | SeriesResult) -> AiFindingRef:
        """The AI finding of a result as every display shows it (the study finding of a series).

        Parameters
        ----------
        result : AnalysisResult or SeriesResult

        Returns
        -------
        AiFindingRef
        """
        if isinstance(result, SeriesResult):
            model = result.slices[0].model
            prediction = result.study_prediction
            if result.refused:
                return cls(finding=f"Not analysed: {result.n_refused} of {len(result.slices)} slices are outside "
                                   f"what {model.pack_id} was validated for", positive=None,
                           threshold=float(prediction.threshold), operating_point=prediction.operating_point,
                           model_id=model.pack_id, model_version=model.version, model_sha256=model.sha256,
                           level="study")
            return cls(finding=prediction.finding, positive=bool(prediction.positive),
                       probability=float(result.study_probability), threshold=float(prediction.threshold),
                       operating_point=prediction.operating_point, model_id=model.pack_id,
                       model_version=model.version, model_sha256=model.sha256, level="study")
        prediction = result.prediction
        refused = result.refused
        return cls(finding=result.finding_text, positive=None if refused else bool(prediction.positive),
                   probability=None if refused else float(prediction.probability),
                   threshold=float(prediction.threshold), operating_point=prediction.operating_point,
                   model_id=result.model.pack_id, model_version=result.model.version,
                   model_sha256=result.model.sha256, level="image")

    @property
    def conclusion(self) -> str:
        """The AI finding as a conclusion: ``"positive"``, ``"negative"`` or ``""`` (no finding)."""
        if self.positive is None:
            return ""
        return "positive" if self.positive else "negative"

    def same_finding(self, other: AiFindingRef | None) -> bool:
        """Both refer to the same AI finding (model, version, operating point and polarity)."""
        return other is not None and (self.model_id, self.model_version, self.operating_point, self.positive) == (
            other.model_id, other.model_version, other.operating_point, other.positive)

    def text(self) -> str:
        """``"Active inflammation (probability 73.4 %, threshold 62.8 %, balanced; sij-... 1.0.0)"``."""
        numbers = []
        if self.probability is not None:
            numbers.append(f"{'score' if self.level == 'study' else 'probability'} {100 * self.probability:.1f} %")
        if self.threshold is not None and self.positive is not None:
            numbers.append(f"threshold {100 * self.threshold:.1f} %")
        if self.operating_point:
            numbers.append(self.operating_point.replace("_", " "))
        model = f"{self.model_id} {self.model_version}".strip()
        details = ", ".join(numbers) + (f"; {model}" if model else "")
        return f"{self.finding} ({details})" if details else self.finding


@dataclass(frozen=True)
class ReaderDecision:
    """A reader's conclusion on a case, beside the AI finding it answers.

    Attributes
    ----------
    key : str
        :func:`case_key` of the case.
    conclusion : str
        ``"positive"``, ``"negative"``, ``"indeterminate"``, or ``""`` while only a note was written.
    note : str
        Free text.
    reader : str
        The reader's name (the ``reader_name`` setting).
    recorded_at : str
        ISO 8601 local time with offset of the last change (:func:`now_iso`).
    ai : AiFindingRef or None
        The AI finding the reader saw when deciding.
    source : str
        The file or folder of the case when the decision was recorded (for people; the key identifies it).
    """

    key: str
    conclusion: str = ""
    note: str = ""
    reader: str = ""
    recorded_at: str = ""
    ai: AiFindingRef | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.conclusion not in ("", *CONCLUSIONS):
            raise ValueError(f"a reader's conclusion is one of {', '.join(CONCLUSIONS)} (or empty), got "
                             f"{self.conclusion!r}")

    @property
    def decided(self) -> bool:
        """The reader gave a conclusion (not only a note)."""
        return bool(self.conclusion)

    @property
    def agreement(self) -> str:
        """``"agree"``, ``"disagree"``, ``"no_ai_finding"`` (the AI refused the case) or ``""`` (not decided)."""
        if not self.conclusion:
            return ""
        if self.ai is None or self.ai.positive is None:
            return "no_ai_finding"
        return "agree" if self.conclusion == self.ai.conclusion else "disagree"

    def conclusion_label(self, positive_label: str = "", negative_label: str = "") -> str:
        """The conclusion in words, with the card's label: ``"positive (Active inflammation)"``."""
        label = {"positive": positive_label, "negative": negative_label}.get(self.conclusion, "")
        return f"{self.conclusion} ({label})" if label else self.conclusion

    def summary(self, positive_label: str = "", negative_label: str = "") -> str:
        """One line for the report, the window and the DICOM burn-in.

        Returns
        -------
        str
            E.g. ``"Agrees with the AI finding: positive (Active inflammation)"``, ``"Disagrees with the AI
            finding: negative (No active inflammation)"``, ``"Conclusion (the AI gave no finding): indeterminate"``,
            ``"No conclusion recorded yet"``.
        """
        conclusion = self.conclusion_label(positive_label, negative_label)
        return {
            "agree": f"Agrees with the AI finding: {conclusion}",
            "disagree": f"Disagrees with the AI finding: {conclusion}",
            "no_ai_finding": f"Conclusion (the AI gave no finding): {conclusion}",
        }.get(self.agreement, "No conclusion recorded yet")

    def signed(self) -> str:
        """``"Dr Ada Lovelace, 2025-03-01 14:05 (UTC+01:00)"`` (``"reader not named"`` without a name)."""
        name = self.reader.strip() or "reader not named"
        when = format_timestamp(self.recorded_at)
        return f"{name}, {when}" if when else name

    def to_dict(self) -> dict[str, Any]:
        """The decision as a JSON-ready dict (with ``schema_version``)."""
        data = asdict(self)
        data["agreement"] = self.agreement
        data["schema_version"] = DECISION_SCHEMA_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReaderDecision:
        """Build a decision from :meth:`to_dict`'s output.

        Raises
        ------
        ValueError
            If the data is not a decision (no ``key``, an unknown conclusion, a malformed AI block).
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("key"), str) or not data["key"]:
            raise ValueError("not a reader decision: no 'key'")
        ai_data = data.get("ai")
        ai = None
        if isinstance(ai_data, Mapping):
            known = {name for name in AiFindingRef.__dataclass_fields__}
            try:
                ai = AiFindingRef(**{name: value for name, value in ai_data.items() if name in known})
            except TypeError as error:
                raise ValueError(f"a reader decision's 'ai' block is malformed: {error}") from error

        def text(name: str) -> str:
            value = data.get(name, "")
            return value if isinstance(value, str) else str(value)

        return cls(key=data["key"], conclusion=text("conclusion"), note=text("note"), reader=text("reader"),
                   recorded_at=text("recorded_at"), ai=ai, source=text("source"))


@dataclass
class ReaderDecisionStore:
    """Reader decisions on disk, one JSON file per case (``<folder>/<key>.json``).

    Parameters
    ----------
    folder : Path, optional
        Default :func:`decisions_dir`, resolved when used (so ``ASDESK_HOME`` set later still counts).
    """

    folder: Path | None = None

    def directory(self) -> Path:
        """The folder decisions are written to."""
        return Path(self.folder) if self.folder is not None else decisions_dir()

    def path_for(self, key: str) -> Path:
        """The JSON file of case ``key`` (characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``)."""
        return self.directory() / (re.sub(r"[^A-Za-z0-9._-]", "_", key)[:200] + ".json")

    def _read(self, key: str) -> dict[str, Any] | None:
        path = self.path_for(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            LOGGER.warning("reader decision file %s is unreadable (%s); it is ignored", path.name, error)
            return None
        return data if isinstance(data, dict) else None

    def load(self, key: str) -> ReaderDecision | None:
        """The latest decision on case ``key``, or ``None`` when there is none (or its file is unreadable).

        Parameters
        ----------
        key : str
            :func:`case_key` of the case.

        Returns
        -------
        ReaderDecision or None
        """
        data = self._read(key)
        if data is None:
            return None
        try:
            return ReaderDecision.from_dict(data)
        except ValueError as error:
            LOGGER.warning("reader decision file %s is not valid (%s); it is ignored", self.path_for(key).name,
                           error)
            return None

    def history(self, key: str) -> list[ReaderDecision]:
        """Earlier versions of the decision on case ``key``, oldest first (without the latest)."""
        data = self._read(key) or {}
        out = []
        for item in data.get("history", []) if isinstance(data.get("history"), list) else []:
            try:
                out.append(ReaderDecision.from_dict(item))
            except ValueError:
                continue
        return out

    def save(self, decision: ReaderDecision) -> Path:
        """Write a decision at once (atomically); the version it replaces goes into the file's ``history``.

        Parameters
        ----------
        decision : ReaderDecision
            Saved as it is (set ``recorded_at`` before, e.g. with :func:`now_iso`).

        Returns
        -------
        Path
            The JSON file.

        Raises
        ------
        OSError
            If the folder cannot be created or written (the caller tells the user: the decision is not saved).
        """
        path = self.path_for(decision.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = self._read(decision.key)
        history: list[Any] = []
        if previous is not None:
            history = [item for item in previous.get("history", []) if isinstance(item, dict)]
            history.append({name: value for name, value in previous.items() if name != "history"})
        data = decision.to_dict()
        data["history"] = history[-MAX_HISTORY:]
        handle, temporary = tempfile.mkstemp(prefix=".decision-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(data, stream, indent=2, ensure_ascii=False)
                stream.write("\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path

    def record(self, key: str, conclusion: str, note: str, reader: str, ai: AiFindingRef | None,
               source: str = "") -> ReaderDecision:
        """Make a decision stamped with the time now and save it (:meth:`save`).

        Returns
        -------
        ReaderDecision
            As saved.
        """
        decision = ReaderDecision(key=key, conclusion=conclusion, note=note, reader=reader, recorded_at=now_iso(),
                                  ai=ai, source=source)
        self.save(decision)
        return decision

