"""Model packs: folders holding ``model.keras`` and ``card.json`` (DESIGN.md, "Model packs are data").

A pack is found in the bundled models folder (:func:`asdesk.core.paths.bundled_models_dir`) or in the
user's data folder (:func:`asdesk.core.paths.user_models_dir`). Nothing here imports TensorFlow
(:func:`write_pack` is handed a Keras model and calls its ``save``).

Integrity
---------
The card states the SHA-256 of ``model.keras``. :func:`load_pack` checks it by default;
:func:`discover_packs` reads only the cards (hashing every model at start-up would cost seconds), and
:class:`asdesk.inference.engine.InferenceEngine` checks the hash again right before it loads the model (unless
told ``verify_hash=False``), so no model is run unchecked.

Same id in two places
---------------------
When two packs share an id (typically a user copy of a bundled pack), the one with the **higher version**
wins; on equal versions the one found first wins, and the bundled folder is searched before the user folder.
So a user can install an update of a bundled pack by giving it a higher version, but cannot shadow the
validated bundled pack with an older or an equal-version copy by accident. The pack that loses is named in
the error list, with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asdesk.core import CardError, ModelHashMismatchError, ModelNotFoundError
from asdesk.core import paths as core_paths
from asdesk.inference.card import ModelCard
from asdesk.inference.runtime import input_fits, model_input_shape

LOGGER = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
_CHUNK_BYTES = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes.

    Parameters
    ----------
    path : str or Path
        The file; read in 1 MiB chunks, so large models need little memory.

    Returns
    -------
    str
        64 lower-case hexadecimal digits.

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelPack:
    """A model pack on disk: its folder and its validated card.

    Attributes
    ----------
    path : Path
        The pack folder (holding ``model.keras`` and ``card.json``).
    card : ModelCard
        The parsed, validated ``card.json``.
    """

    path: Path
    card: ModelCard

    @property
    def model_path(self) -> Path:
        """``<pack>/model.keras``."""
        return self.path / MODEL_FILE

    @property
    def card_path(self) -> Path:
        """``<pack>/card.json``."""
        return self.path / CARD_FILE

    @property
    def id(self) -> str:
        """The card's pack id."""
        return self.card.id

    def verify_hash(self) -> str:
        """Check that ``model.keras`` has the SHA-256 the card states.

        Returns
        -------
        str
            The hash (equal to ``card.sha256``).

        Raises
        ------
        ModelHashMismatchError
            The file differs from the one the card describes (altered or damaged).
        CardError
            ``model.keras`` is missing or unreadable.
        """
        try:
            actual = sha256_file(self.model_path)
        except FileNotFoundError as error:
            raise CardError(f"model pack {self.card.id!r} at {self.path}: no {MODEL_FILE}; a model pack is a "
                            f"folder with {MODEL_FILE} and {CARD_FILE}: reinstall the pack") from error
        except OSError as error:
            raise CardError(f"model pack {self.card.id!r}: cannot read {self.model_path} ({error}); "
                            "check the file permissions or reinstall the pack") from error
        if actual != self.card.sha256:
            raise ModelHashMismatchError(
                f"model pack {self.card.id!r} (version {self.card.version}) at {self.path}: {MODEL_FILE} has "
                f"SHA-256 {actual}, but its card expects {self.card.sha256}; the model file was altered or "
                "damaged: reinstall the pack")
        return actual


def load_pack(path: str | Path, verify_hash: bool = True) -> ModelPack:
    """Read a model pack folder and validate it.

    Parameters
    ----------
    path : str or Path
        The pack folder, or its ``card.json``.
    verify_hash : bool
        Whether to check the SHA-256 of ``model.keras`` against the card (reads the whole file).

    Returns
    -------
    ModelPack

    Raises
    ------
    CardError
        ``card.json`` is missing, not JSON or invalid (see :meth:`ModelCard.from_dict`), or ``model.keras``
        is missing.
    ModelHashMismatchError
        ``verify_hash`` is true and ``model.keras`` does not have the card's SHA-256; the message names the
        pack and both hashes and says to reinstall the pack.
    """
    folder = Path(path)
    if folder.name == CARD_FILE and folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise CardError(f"{folder}: not a folder; a model pack is a folder with {MODEL_FILE} and {CARD_FILE}")
    card = ModelCard.load(folder / CARD_FILE)
    pack = ModelPack(path=folder, card=card)
    if not pack.model_path.is_file():
        raise CardError(f"model pack {card.id!r} at {folder}: no {MODEL_FILE} beside {CARD_FILE}; "
                        "reinstall the pack")
    if verify_hash:
        pack.verify_hash()
    return pack


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a version string: numeric parts compare as numbers ("1.10" > "1.9")."""
    parts = re.findall(r"\d+|[A-Za-z]+", version)
    return tuple((1, int(part)) if part.isdigit() else (0, part.lower()) for part in parts)


def default_pack_directories() -> list[Path]:
    """The folders searched for packs, in priority order: bundled, then the user's."""
    return [core_paths.bundled_models_dir(), core_paths.user_models_dir()]


def discover_packs(directories: Sequence[str | Path] | None = None,
                   verify_hash: bool = False) -> tuple[list[ModelPack], list[str]]:
    """Find the model packs installed in the bundled and user model folders.

    Every sub-folder holding a ``card.json`` is a pack candidate. Invalid packs never stop the search:
    they are reported in the error list.

    Parameters
    ----------
    directories : sequence of str or Path, optional
        Folders to scan, in priority order; default :func:`default_pack_directories` (bundled, then
        user). Missing folders are skipped silently.
    verify_hash : bool
        Also check every ``model.keras`` against its card's SHA-256 (slow for many or large packs; the
        engine checks it anyway before loading a model).

    Returns
    -------
    packs : list of ModelPack
        Valid packs, one per id (see the module docstring for which copy wins), sorted by id.
    errors : list of str
        One message per pack that could not be used (bad card, missing model, hash mismatch) or that was
        shadowed by another pack with the same id.
    """
    folders = [Path(d) for d in directories] if directories is not None else default_pack_directories()
    chosen: dict[str, ModelPack] = {}
    errors: list[str] = []
    for directory in folders:
        if not directory.is_dir():
            continue
        try:
            candidates = sorted(p for p in directory.iterdir() if (p / CARD_FILE).is_file())
        except OSError as error:
            errors.append(f"{directory}: cannot list model packs ({error})")
            continue
        for folder in candidates:
            try:
                pack = load_pack(folder, verify_hash=verify_hash)
            except CardError as error:
                errors.append(str(error))
                LOGGER.warning("skipping model pack %s: %s", folder, error)
                continue
            if pack.card.id != folder.name:
                LOGGER.info("model pack folder %s holds pack id %r", folder, pack.card.id)
            previous = chosen.get(pack.card.id)
            if previous is None:
                chosen[pack.card.id] = pack
                continue
            if _version_key(pack.card.version) > _version_key(previous.card.version):
                winner, loser = pack, previous
            else:
                winner, loser = previous, pack
            chosen[pack.card.id] = winner
            message = (f"model pack {loser.card.id!r} version {loser.card.version} at {loser.path} is not "
                       f"used: version {winner.card.version} at {winner.path} has the same id"
                       + (" and a higher version" if winner.card.version != loser.card.version
                          else " and was found first")
                       + "; give a pack a higher version to make it the one used")
            errors.append(message)
            LOGGER.info(message)
    packs = sorted(chosen.values(), key=lambda p: p.card.id)
    return packs, errors


def _describe(packs: Iterable[ModelPack]) -> str:
    rows = [f"{p.card.id} (modalities {', '.join(repr(m) for m in p.card.modalities) or 'none'}; "
            f"body parts {', '.join(repr(b) for b in p.card.body_parts) or 'any'})" for p in packs]
    return "; ".join(rows) if rows else "none installed"


def find_pack(pack_id: str | None = None, modality: str = "", body_part: str = "",
              packs: Sequence[ModelPack] | None = None) -> ModelPack:
    """Choose the model pack for an image.

    Parameters
    ----------
    pack_id : str, optional
        Choose this pack (exact id; a case-insensitive match is accepted when unique). When given,
        ``modality`` and ``body_part`` are ignored.
    modality : str
        The image's DICOM Modality (0008,0060), e.g. ``"MR"``, ``"CR"``; ``""`` for raster files
        (PNG/JPEG/TIFF). Matched case-insensitively against ``card.modalities``; a card accepts raster
        images by listing ``""`` among its modalities.
    body_part : str
        The image's Body Part Examined (0018,0015), e.g. ``"SPINE"``; ``""`` when unknown. Compared
        case-insensitively with ``card.body_parts``.
    packs : sequence of ModelPack, optional
        Candidates; default the packs of :func:`discover_packs`.

    Returns
    -------
    ModelPack
        The pack with that id; otherwise a pack whose modalities contain ``modality``. Packs that also
        list ``body_part`` are preferred; when none does, a modality match is still used (Body Part
        Examined is optional and free text in DICOM) and a warning is logged. Among equals the first by id
        is used.

    Raises
    ------
    ModelNotFoundError
        No pack has that id, or no pack accepts that modality; the message lists the installed packs and
        says to choose one with ``--model``.
    """
    if packs is None:
        packs = discover_packs()[0]
    packs = list(packs)
    if pack_id:
        exact = [p for p in packs if p.card.id == pack_id]
        if not exact:
            exact = [p for p in packs if p.card.id.lower() == pack_id.lower()]
        if len(exact) == 1:
            return exact[0]
        raise ModelNotFoundError(f"no model pack with id {pack_id!r}; installed packs: {_describe(packs)}. "
                                 "Pass --model with one of these ids, or install the pack into "
                                 f"{core_paths.user_models_dir()}")
    wanted_modality = modality.strip().upper()
    wanted_part = body_part.strip().upper()
    candidates = sorted((p for p in packs if wanted_modality in p.card.modalities), key=lambda p: p.card.id)
    if not candidates:
        kind = f"modality {wanted_modality!r}" if wanted_modality else "raster images (PNG/JPEG, modality '')"
        raise ModelNotFoundError(f"no model pack accepts {kind}"
                                 + (f" (body part {wanted_part!r})" if wanted_part else "")
                                 + f"; installed packs: {_describe(packs)}. Pass --model <pack id> to "
                                 "choose one explicitly")
    preferred = [p for p in candidates if wanted_part in p.card.body_parts]
    if preferred:
        chosen = preferred
    else:
        chosen = candidates
        if wanted_part:
            LOGGER.warning("no model pack for modality %r lists body part %r; using %s by modality only",
                           wanted_modality, wanted_part, chosen[0].card.id)
    if len(chosen) > 1:
        LOGGER.info("several model packs match modality %r, body part %r: %s; using %s (choose with --model)",
                    wanted_modality, wanted_part, ", ".join(p.card.id for p in chosen), chosen[0].card.id)
    return chosen[0]


def _check_model_fits_card(model: Any, card: ModelCard) -> None:  # noqa: ANN401
    if not input_fits(model, card.input_shape):
        raise CardError(f"card of pack {card.id!r} says input {card.input_shape} but the model expects "
                        f"{model_input_shape(model)}; make the card's input and resize step match the model")
    try:
        model.get_layer(card.gradcam_layer)
    except ValueError as error:
        raise CardError(f"card of pack {card.id!r} names Grad-CAM layer {card.gradcam_layer!r}, which is "
                        "not a layer of the model's top-level (flat) graph; use the last convolutional "
                        "layer's name, e.g. asdesk.training.model.GRADCAM_LAYERS") from error


def write_pack(directory: str | Path, model: Any, card: Mapping[str, Any]) -> ModelPack:  # noqa: ANN401
    """Save a Keras model and its card as a model pack.

    Writes ``<directory>/model.keras`` (``model.save``, without optimizer state: a pack is for inference,
    and Adam's moments would triple a fine-tuned MobileNetV2's file), computes its SHA-256, stores it as
    ``card["sha256"]`` and writes ``<directory>/card.json``. The card is validated before anything is
    written, and the model is checked against it (input shape, Grad-CAM layer).

    Parameters
    ----------
    directory : str or Path
        The pack folder; created if needed. Existing ``model.keras``/``card.json`` are replaced.
    model : keras.Model
        A flat functional model (see :func:`asdesk.training.model.build_classifier`).
    card : mapping
        The card document (see :class:`~asdesk.inference.card.ModelCard`); its ``sha256`` may be absent
        or a placeholder. The caller's mapping is not modified. numpy scalars/arrays and paths in it are
        written as JSON numbers, lists and strings.

    Returns
    -------
    ModelPack
        The written pack (its card holds the real hash).

    Raises
    ------
    CardError
        The card is invalid or does not fit the model.
    """
    folder = Path(directory)
    document: dict[str, Any] = copy.deepcopy(dict(card))
    document["sha256"] = "0" * 64  # placeholder until the model file exists
    parsed = ModelCard.from_dict(document, source=f"card of pack {document.get('id', '?')!r}")
    _check_model_fits_card(model, parsed)
    try:
        json.dumps(document, default=_json_default)
    except (TypeError, ValueError) as error:
        raise CardError(f"card of pack {parsed.id!r} cannot be written as JSON ({error})") from error
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / MODEL_FILE
    _inference_copy(model).save(model_path)
    document["sha256"] = sha256_file(model_path)
    text = json.dumps(document, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    temporary = folder / (CARD_FILE + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, folder / CARD_FILE)
    LOGGER.info("wrote model pack %s version %s (sha256 %s) to %s", parsed.id, parsed.version,
                document["sha256"][:12], folder)
    return ModelPack(path=folder, card=ModelCard.from_dict(json.loads(text), source=str(folder / CARD_FILE)))


def _inference_copy(model: Any) -> Any:  # noqa: ANN401
    """``model`` itself when it carries no optimizer, else a clone with the same layers and weights and none."""
    if getattr(model, "optimizer", None) is None:
        return model
    import keras

    clone = keras.Model.from_config(model.get_config())  # uncompiled: no optimizer, no compile config
    clone.set_weights(model.get_weights())
    return clone


def _json_default(value: Any) -> Any:  # noqa: ANN401
    """JSON for the numpy scalars/arrays and paths a trainer may leave in a card."""
    if hasattr(value, "tolist"):  # numpy scalar or array
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
