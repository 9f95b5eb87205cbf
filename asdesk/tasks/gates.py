"""The metadata gate and the choice of model pack: which images a model was made for.

DESIGN.md, "A finding is earned": an image reaches a model only through two gates, applied whatever chose
the model (automatically, ``--model``, or the window's saved default):

1. **Metadata** (this module): the image's modality, body part and, for MR, its plane and sequence must be
   among those the card lists. An empty string in a card's list accepts images that *lack* that attribute
   (a PNG has no modality; many DICOM files leave Body Part Examined empty); an empty list accepts nothing.
2. **Content** (:mod:`asdesk.inference.content_gate`): the distance of the image's pooled features to the
   training images must be within the card's threshold. :func:`content_reasons` turns it into a reason.

The MR plane is read from ImageOrientationPatient (DICOM PS3.3 C.7.6.2.1.1): the slice normal is the cross
product of the row and column direction cosines, and the plane is named after the patient axis it is closest
to (x: sagittal, y: coronal, z: axial), as radiology viewers label oblique slices. The sequence is read from
the acquisition tags (PS3.3 C.8.3.1): an inversion-recovery acquisition (ScanningSequence ``IR``) with a short
inversion time (< 300 ms at 1.5-3 T) is STIR; the series description, protocol and sequence names are used
when the tags are missing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from asdesk.core import ImageMetadata, ModelNotFoundError

if TYPE_CHECKING:
    from asdesk.inference import ModelCard, ModelPack

LOGGER = logging.getLogger(__name__)

__all__ = [
    "NoPackAcceptsError",
    "accepting_packs",
    "choose_pack",
    "content_reasons",
    "metadata_reasons",
    "pack_for",
    "mr_plane",
    "mr_sequence",
]

STIR_MAX_INVERSION_MS = 300.0
"""Inversion times up to this (ms) null fat: short-tau inversion recovery (STIR) at 0.5-3 T."""
FLAIR_MIN_INVERSION_MS = 1200.0
"""Inversion times from this (ms) null fluid: FLAIR."""


class NoPackAcceptsError(ModelNotFoundError):
    """No installed model pack was made for this image; the message gives each pack's reason.

    Attributes
    ----------
    reasons : dict
        Pack id -> tuple of reasons it refused the image.
    """

    def __init__(self, message: str, reasons: dict[str, tuple[str, ...]]) -> None:
        super().__init__(message)
        self.reasons = reasons


class SeveralPacksAcceptError(ModelNotFoundError):
    """Several bundled model packs accept the image, each answering a different question (e.g. knee
    osteoarthritis and knee bone density on the same radiograph): none is chosen silently.

    ``asdesk analyze`` runs each of them (:func:`asdesk.tasks.analysis.analyze_path_each`); elsewhere (screening,
    the window) the user chooses one with ``--model`` or the model box.

    Attributes
    ----------
    pack_ids : tuple of str
        The accepting packs' ids.
    """

    def __init__(self, message: str, pack_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.pack_ids = tuple(pack_ids)


def mr_plane(orientation: Sequence[float] | None) -> str:
    """The anatomical plane of an MR slice from its ImageOrientationPatient.

    Parameters
    ----------
    orientation : sequence of 6 float or None
        Row and column direction cosines in patient coordinates (DICOM LPS).

    Returns
    -------
    str
        ``"AXIAL"``, ``"CORONAL"`` or ``"SAGITTAL"`` (the patient axis closest to the slice normal: z, y or
        x), or ``""`` when the orientation is missing or degenerate.
    """
    if orientation is None or len(orientation) != 6:
        return ""
    values = np.asarray(orientation, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return ""
    normal = np.cross(values[:3], values[3:])
    if float(np.linalg.norm(normal)) < 1e-3:
        return ""
    return ("SAGITTAL", "CORONAL", "AXIAL")[int(np.argmax(np.abs(normal)))]


def mr_sequence(metadata: ImageMetadata) -> str:
    """The MR sequence type of an image, from its acquisition tags.

    Parameters
    ----------
    metadata : ImageMetadata
        With ``scanning_sequence`` (0018,0020), ``inversion_time_ms`` (0018,0082), ``sequence_name``
        (0018,0024), ``series_description`` and ``protocol_name``.

    Returns
    -------
    str
        ``"STIR"``, ``"FLAIR"``, ``"IR"`` (inversion recovery of another inversion time), ``"T1"``, ``"T2"``,
        ``"PD"``, or ``""`` when nothing identifies it.
    """
    parts = {part.strip().upper() for part in re.split(r"[\\/,\s]+", metadata.scanning_sequence) if part.strip()}
    text = " ".join((metadata.series_description, metadata.protocol_name, metadata.sequence_name)).upper()
    inversion = metadata.inversion_time_ms
    if "IR" in parts and inversion is not None and inversion > 0:
        if inversion <= STIR_MAX_INVERSION_MS:
            return "STIR"
        if inversion >= FLAIR_MIN_INVERSION_MS:
            return "FLAIR"
        return "IR"
    if re.search(r"STIR|TIRM|\*TIR|\bTIR", text):
        return "STIR"
    if "FLAIR" in text:
        return "FLAIR"
    if re.search(r"T1", text):
        return "T1"
    if re.search(r"T2", text):
        return "T2"
    if re.search(r"\bPD\b|PROTON", text):
        return "PD"
    return ""


def _shown(values: Sequence[str]) -> str:
    return ", ".join(value if value else "(unspecified)" for value in values) or "nothing"


def metadata_reasons(card: ModelCard, metadata: ImageMetadata) -> tuple[str, ...]:
    """Why the metadata gate refuses an image for a card (empty when it accepts).

    Parameters
    ----------
    card : ModelCard
        Its ``modalities`` and ``body_parts`` (an entry ``""`` accepts an image without that attribute; an
        empty list accepts nothing) and, for MR, ``mr_planes`` and ``mr_sequences`` in ``card.raw`` (absent:
        not checked).
    metadata : ImageMetadata
        The image's metadata; raster images have no modality or body part.

    Returns
    -------
    tuple of str
        Reasons in words, e.g. ``"body part CHEST (the card accepts KNEE, (unspecified))"``.
    """
    reasons: list[str] = []
    modality = (metadata.modality or "").strip().upper()
    body_part = (metadata.body_part or "").strip().upper()
    if modality not in card.modalities:
        what = f"modality {modality}" if modality else f"a {metadata.format or 'raster'} image without modality"
        reasons.append(f"{what} (the model accepts {_shown(card.modalities)})")
    if body_part not in card.body_parts:
        what = f"body part {body_part}" if body_part else "no body part in the file"
        reasons.append(f"{what} (the model accepts {_shown(card.body_parts)})")
    if modality == "MR":
        planes = card.mr_planes
        if "mr_planes" in card.raw:  # absent: not checked; an empty list accepts nothing
            plane = mr_plane(metadata.image_orientation)
            if plane not in planes:
                what = f"{plane.lower()} plane" if plane else "no ImageOrientationPatient (plane unknown)"
                reasons.append(f"{what} (the model accepts {_shown(planes).lower()} slices)")
        sequences = card.mr_sequences
        if "mr_sequences" in card.raw:
            sequence = mr_sequence(metadata)
            if sequence not in sequences:
                what = f"{sequence} sequence" if sequence else "a sequence that could not be identified"
                reasons.append(f"{what} (the model accepts {_shown(sequences)})")
    return tuple(reasons)


def content_reasons(distance: float | None, threshold: float | None) -> tuple[str, ...]:
    """Why the content gate refuses an image (empty when it accepts or was not measured).

    Parameters
    ----------
    distance : float or None
        The image's content-gate distance (:class:`asdesk.inference.content_gate.ContentGate`).
    threshold : float or None
        The card's threshold, chosen so that >= 95% of validation images pass.

    Returns
    -------
    tuple of str
    """
    if distance is None or threshold is None:
        return ()
    if not np.isfinite(distance) or distance > threshold:
        return (f"the image does not resemble the images the model was trained on (content distance "
                f"{distance:.3g} > {threshold:.3g})",)
    return ()


def accepting_packs(metadata: ImageMetadata, packs: Sequence[ModelPack]) -> tuple[list[ModelPack],
                                                                                  dict[str, tuple[str, ...]]]:
    """Split packs into those whose metadata gate accepts the image and the others' reasons.

    Returns
    -------
    accepted : list of ModelPack
        Bundled packs first, each group sorted by id.
    refused : dict
        Pack id -> reasons.
    """
    accepted: list[ModelPack] = []
    refused: dict[str, tuple[str, ...]] = {}
    # Bundled (validated, pinned) packs first, then by id: a user pack never wins a tie silently.
    for pack in sorted(packs, key=lambda p: (getattr(p, "origin", "bundled") != "bundled", p.card.id)):
        reasons = metadata_reasons(pack.card, metadata)
        if reasons:
            refused[pack.card.id] = reasons
        else:
            accepted.append(pack)
    return accepted, refused


def choose_pack(metadata: ImageMetadata, packs: Sequence[ModelPack]) -> ModelPack:
    """The pack for an image when none was named: the one whose metadata gate accepts it.

    Parameters
    ----------
    metadata : ImageMetadata
    packs : sequence of ModelPack
        Installed packs.

    Returns
    -------
    ModelPack
        The accepting pack; a bundled pack before user-installed ones (several accepting user packs: the
        first by id, logged; choose with ``--model``).

    Raises
    ------
    NoPackAcceptsError
        No pack's metadata gate accepts the image; the message names each pack and its reason.
    SeveralPacksAcceptError
        Several bundled packs accept it (e.g. ``knee-xray-oa`` and ``knee-xray-osteoporosis`` on a knee
        radiograph): none wins silently; the message names them.
    """
    accepted, refused = accepting_packs(metadata, packs)
    if not accepted:
        if not packs:
            raise NoPackAcceptsError("no model pack is installed; see `asdesk models`", {})
        detail = "; ".join(f"{pack_id}: {', '.join(reasons)}" for pack_id, reasons in refused.items())
        raise NoPackAcceptsError(
            f"no installed model pack was made for {metadata.source.name}: {detail}. A model chosen with "
            "--model and --force gives a result marked outside validated use", refused)
    candidates = first_choices(accepted)
    if len(candidates) > 1:
        ids = [p.card.id for p in candidates]
        raise SeveralPacksAcceptError(
            f"several model packs were made for {metadata.source.name}, each for a different finding: "
            + "; ".join(f"{p.card.id} ({p.card.task})" for p in candidates)
            + ". Choose one with --model (the window: the model box); asdesk analyze without --model shows "
            "each pack's finding", ids)
    if len(accepted) > 1:
        LOGGER.info("several model packs accept %s: %s; using %s (bundled before user-installed; choose with "
                    "--model)", metadata.source.name, ", ".join(p.card.id for p in accepted), accepted[0].card.id)
    return accepted[0]


def first_choices(accepted: Sequence[ModelPack]) -> list[ModelPack]:
    """The packs among ``accepted`` that an unnamed choice would be between: the bundled ones when any
    bundled pack accepts (a user-installed pack never wins against a bundled one), else the first one.

    Parameters
    ----------
    accepted : sequence of ModelPack
        From :func:`accepting_packs` (bundled first, then by id).

    Returns
    -------
    list of ModelPack
        Several when several bundled packs accept the image (different findings: none may win silently).
    """
    bundled = [p for p in accepted if getattr(p, "origin", "bundled") == "bundled"]
    return bundled if bundled else list(accepted[:1])


def packs_for_each(metadata: ImageMetadata, packs: Sequence[ModelPack], model_id: str | None = None
                   ) -> list[ModelPack]:
    """Every pack that will analyse an image: the named one, or each bundled pack whose metadata gate accepts it.

    Parameters
    ----------
    metadata : ImageMetadata
    packs : sequence of ModelPack
    model_id : str, optional
        A pack id (``--model``): then exactly that pack, as :func:`pack_for`.

    Returns
    -------
    list of ModelPack
        One or more, in id order.

    Raises
    ------
    ModelNotFoundError
        No pack has ``model_id``; or (:class:`NoPackAcceptsError`) none was named and none accepts the image.
    """
    if model_id:
        return [pack_for(metadata, packs, model_id)]
    try:
        return [choose_pack(metadata, packs)]
    except SeveralPacksAcceptError:
        accepted, _refused = accepting_packs(metadata, packs)
        return first_choices(accepted)


def pack_for(metadata: ImageMetadata, packs: Sequence[ModelPack], model_id: str | None = None) -> ModelPack:
    """The pack that will analyse an image: the named one, or the one whose metadata gate accepts it.

    A named pack is used even when its gates refuse the image: :func:`asdesk.tasks.analysis.analyze_batch`
    then refuses the image (or marks an overridden result), so naming a model never bypasses the gates.

    Parameters
    ----------
    metadata : ImageMetadata
    packs : sequence of ModelPack
    model_id : str, optional
        Pack id (``--model``, the window's model choice or saved default).

    Returns
    -------
    ModelPack

    Raises
    ------
    ModelNotFoundError
        No pack has ``model_id``; or (:class:`NoPackAcceptsError`) none was named and none accepts the image.
    """
    if model_id:
        from asdesk.inference import USER_ID_PREFIX, find_pack, find_user_pack

        if model_id.lower().startswith(USER_ID_PREFIX):
            return find_user_pack(model_id, packs)
        return find_pack(pack_id=model_id, packs=packs)
    return choose_pack(metadata, packs)
