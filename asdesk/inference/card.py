"""The model-pack card (``card.json``): the single truth about a model (DESIGN.md, "Model packs are data").

Like a MONAI bundle's metadata file, it says what the model answers, what it was trained and measured on,
how its input is made, where Grad-CAM looks and which thresholds to use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asdesk.core import CardError, ModelInfo
from asdesk.preprocess import Pipeline, build_pipeline

CARD_SCHEMA_VERSION = 1
OPERATING_POINTS = ("high_sensitivity", "balanced", "high_specificity")
ARCHITECTURES = ("MobileNetV2", "VGG16", "ResNet50", "DenseNet121")
_REQUIRED = ("id", "version", "task", "labels", "modalities", "body_parts", "architecture", "input",
             "preprocessing", "gradcam_layer", "operating_points", "performance", "training_data",
             "intended_use", "sha256", "asdesk_version", "date")


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold chosen on validation data.

    Attributes
    ----------
    threshold : float
        Probability at or above which the finding is positive, in [0, 1].
    sensitivity, specificity : float or None
        What the threshold gave on the data it was chosen on.
    """

    threshold: float
    sensitivity: float | None = None
    specificity: float | None = None


@dataclass(frozen=True)
class StudyRule:
    """How slice probabilities make a study-level result.

    Attributes
    ----------
    kind : str
        ``"top_k_mean"``: the mean of the ``k`` highest slice probabilities.
    k : int
    threshold : float
        Study is positive when the study score is at or above it.
    description : str
        The rule in words, for reports.
    """

    kind: str
    k: int
    threshold: float
    description: str


@dataclass(frozen=True)
class ModelCard:
    """A parsed, validated ``card.json``.

    Use :meth:`from_dict` / :meth:`load`; ``raw`` keeps the whole document (performance tables, provenance)
    for reports.

    Raises
    ------
    CardError
        From :meth:`from_dict` when a required field is missing or inconsistent.
    """

    id: str
    version: str
    task: str
    positive_label: str
    negative_label: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    architecture: str
    input_shape: tuple[int, int, int]
    preprocessing: tuple[Mapping[str, Any], ...]
    gradcam_layer: str
    operating_points: Mapping[str, OperatingPoint]
    default_operating_point: str
    sha256: str
    intended_use: str
    study_rule: StudyRule | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "card.json") -> ModelCard:
        """Validate and parse a card document.

        Parameters
        ----------
        data : mapping
            The decoded JSON.
        source : str
            Named in error messages.

        Raises
        ------
        CardError
            A required field is missing, the pipeline is invalid, its resize disagrees with ``input``,
            a threshold is outside [0, 1] or the default operating point is not defined.
        """
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise CardError(f"{source}: missing required field(s) {', '.join(missing)}; "
                            "see DESIGN.md 'Model packs are data' for the card fields")
        if data.get("schema_version", CARD_SCHEMA_VERSION) != CARD_SCHEMA_VERSION:
            raise CardError(f"{source}: schema_version {data.get('schema_version')} is not supported by this "
                            f"asdesk (expects {CARD_SCHEMA_VERSION}); update asdesk")
        if data["architecture"] not in ARCHITECTURES:
            raise CardError(f"{source}: architecture {data['architecture']!r} is not one of {ARCHITECTURES}")
        try:
            height, width, channels = (int(v) for v in (data["input"]["height"], data["input"]["width"],
                                                        data["input"]["channels"]))
            labels = data["labels"]
            positive, negative = str(labels["positive"]), str(labels["negative"])
            points = {name: OperatingPoint(float(p["threshold"]), p.get("sensitivity"), p.get("specificity"))
                      for name, p in data["operating_points"].items() if name in OPERATING_POINTS}
            default = str(data["operating_points"].get("default", "balanced"))
        except (KeyError, TypeError, ValueError) as error:
            raise CardError(f"{source}: malformed input/labels/operating_points ({error!r})") from error
        if default not in points:
            raise CardError(f"{source}: default operating point {default!r} is not defined; "
                            f"defined: {sorted(points)}")
        for name, point in points.items():
            if not 0.0 <= point.threshold <= 1.0:
                raise CardError(f"{source}: threshold of {name} is {point.threshold}, outside [0, 1]")
        try:
            pipeline = build_pipeline(data["preprocessing"])
        except ValueError as error:
            raise CardError(f"{source}: invalid preprocessing: {error}") from error
        if pipeline.input_shape != (height, width, channels):
            raise CardError(f"{source}: preprocessing resizes to {pipeline.input_shape} but input is "
                            f"{(height, width, channels)}")
        sha = str(data["sha256"]).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise CardError(f"{source}: sha256 must be 64 hex digits, got {data['sha256']!r}")
        rule = None
        if data.get("study_rule"):
            spec = data["study_rule"]
            try:
                rule = StudyRule(str(spec["kind"]), int(spec["k"]), float(spec["threshold"]),
                                 str(spec.get("description", "")))
            except (KeyError, TypeError, ValueError) as error:
                raise CardError(f"{source}: malformed study_rule ({error!r})") from error
            if rule.kind != "top_k_mean" or rule.k < 1:
                raise CardError(f"{source}: study_rule kind must be 'top_k_mean' with k >= 1")
        _check_new_blocks(data, source)
        return cls(
            id=str(data["id"]), version=str(data["version"]), task=str(data["task"]),
            positive_label=positive, negative_label=negative,
            modalities=tuple(str(m).upper() for m in data["modalities"]),
            body_parts=tuple(str(b).upper() for b in data["body_parts"]),
            architecture=str(data["architecture"]), input_shape=(height, width, channels),
            preprocessing=tuple(data["preprocessing"]), gradcam_layer=str(data["gradcam_layer"]),
            operating_points=points, default_operating_point=default, sha256=sha,
            intended_use=str(data["intended_use"]), study_rule=rule, raw=dict(data),
        )

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read and validate a ``card.json`` file.

        Raises
        ------
        CardError
            The file is missing, not JSON, or invalid (see :meth:`from_dict`).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise CardError(f"{path}: no card.json; a model pack is a folder with model.keras and "
                            "card.json") from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CardError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise CardError(f"{path}: a card is a JSON object")
        return cls.from_dict(data, source=str(path))

    def pipeline(self) -> Pipeline:
        """The model's preprocessing pipeline (:func:`asdesk.preprocess.build_pipeline`)."""
        return build_pipeline(self.preprocessing)

    def model_info(self) -> ModelInfo:
        """Pack id, version and hash for results and reports."""
        return ModelInfo(pack_id=self.id, version=self.version, sha256=self.sha256, task=self.task,
                         positive_label=self.positive_label, negative_label=self.negative_label,
                         map_name=self.map_name)

    @property
    def explanation(self) -> str:
        """The kind of heat map: ``"grad_cam"`` (default; classifiers) or ``"oedema_map"`` (the card's
        ``explanation.kind``: a segmentation model whose ``gradcam_layer`` is its per-pixel probability
        output, shown as it is, not normalised to its maximum)."""
        block = self.raw.get("explanation")
        kind = str(block.get("kind", "grad_cam")) if isinstance(block, Mapping) else "grad_cam"
        return kind if kind in ("grad_cam", "oedema_map") else "grad_cam"

    @property
    def map_name(self) -> str:
        """How the heat map is named to the user: ``"Grad-CAM"`` or ``"oedema map"``."""
        return "oedema map" if self.explanation == "oedema_map" else "Grad-CAM"

    def threshold(self, operating_point: str | None = None) -> tuple[str, float]:
        """(name, threshold) of an operating point; the card's default when ``None``.

        Raises
        ------
        CardError
            If the card does not define that operating point.
        """
        name = operating_point or self.default_operating_point
        if name not in self.operating_points:
            raise CardError(f"model {self.id} has no operating point {name!r}; it has "
                            f"{', '.join(sorted(self.operating_points))}")
        return name, self.operating_points[name].threshold

    @property
    def content_gate(self) -> Mapping[str, Any] | None:
        """The ``content_gate`` block (file, sha256, method, feature_layer, threshold, ...), or ``None``.

        Load the gate with :func:`asdesk.inference.content_gate.load_pack_gate`.
        """
        return self.raw.get("content_gate") or None

    @property
    def calibration(self) -> tuple[float, float] | None:
        """``(slope, intercept)`` of the card's Platt calibration, or ``None`` (raw probabilities).

        Apply with :func:`asdesk.inference.calibration.calibrate`.
        """
        block = self.raw.get("calibration")
        return (float(block["slope"]), float(block["intercept"])) if block else None

    @property
    def mr_planes(self) -> tuple[str, ...]:
        """MR image planes the pack accepts (e.g. ``("CORONAL",)``); empty: the card sets none."""
        return tuple(str(p).upper() for p in self.raw.get("mr_planes", ()))

    @property
    def mr_sequences(self) -> tuple[str, ...]:
        """MR sequences the pack accepts (e.g. ``("STIR",)``); empty: the card sets none."""
        return tuple(str(p).upper() for p in self.raw.get("mr_sequences", ()))

    @property
    def training_patients(self) -> tuple[str, frozenset[str]] | None:
        """``(salt, {sha256(salt + patient id)})`` of every patient that trained or validated the model."""
        block = self.raw.get("training_patients")
        return (str(block["salt"]), frozenset(str(h).lower() for h in block["sha256"])) if block else None

    @property
    def performance(self) -> Mapping[str, Any]:
        """The measured performance block, as written by ``asdesk evaluate``."""
        return self.raw.get("performance", {})


def _check_new_blocks(data: Mapping[str, Any], source: str) -> None:
    """Validate the optional ``content_gate``, ``calibration``, ``training_patients`` and MR blocks.

    Raises
    ------
    CardError
        A block is malformed: a gate without file/threshold/feature layer, a Platt slope that is not > 0,
        training patients without a salt, or a plane/sequence list that is not a list of strings.
    """
    gate = data.get("content_gate")
    if gate:
        try:
            threshold = float(gate["threshold"])
            ok = bool(gate["file"]) and bool(gate["feature_layer"]) and threshold >= 0 and threshold == threshold
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CardError(f"{source}: content_gate needs file, feature_layer and a threshold >= 0")
    calibration = data.get("calibration")
    if calibration:
        try:
            slope, intercept = float(calibration["slope"]), float(calibration["intercept"])
        except (KeyError, TypeError, ValueError) as error:
            raise CardError(f"{source}: malformed calibration ({error!r})") from error
        if calibration.get("method", "platt") != "platt" or not slope > 0 or intercept != intercept:
            raise CardError(f"{source}: calibration must be Platt scaling with slope > 0, got {calibration!r}")
    patients = data.get("training_patients")
    if patients and (not isinstance(patients.get("salt"), str) or not isinstance(patients.get("sha256"), list)):
        raise CardError(f"{source}: training_patients needs a salt (str) and a sha256 list")
    for key in ("mr_planes", "mr_sequences"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CardError(f"{source}: {key} must be a list of strings")
