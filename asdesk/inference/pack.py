"""Model packs: folders holding ``model.keras`` and ``card.json`` (DESIGN.md, "Model packs are data").

A pack is found in the bundled models folder (:func:`asdesk.core.paths.bundled_models_dir`) or in the
user's data folder (:func:`asdesk.core.paths.user_models_dir`). Nothing here imports TensorFlow
(:func:`write_pack` is handed a Keras model and calls its ``save``).

Integrity (see :mod:`asdesk.inference.trust`)
---------------------------------------------
The card states the SHA-256 of ``model.keras`` and of any other file of the pack (e.g. a content gate).
:func:`load_pack` checks, before anything else uses the pack:

* a **bundled** pack (its folder is in the bundled models folder): ``card.json``'s bytes and the files the card
  lists must match the pins compiled into asdesk (:mod:`asdesk.inference.pins`); otherwise it is refused;
* a **user-installed** pack: when ``card.sig`` is present it must be a valid Ed25519 signature over
  ``card.json`` by a trusted key (else refused); without it the pack is "user-installed, unsigned": usable,
  and marked so in every result (:attr:`ModelPack.origin_label`), unless ``ASDESK_REQUIRE_SIGNED_PACKS=1``.

With ``verify_hash`` it also hashes every file the card lists. :func:`discover_packs` hashes cards only (hashing
every model at start-up would cost seconds for large models); :class:`asdesk.inference.engine.InferenceEngine`
hashes the files right before it loads the model, and ``asdesk models`` hashes everything.

Same id in two places
---------------------
A user-installed pack **never replaces a bundled pack**, whatever its version: when its id is the id of a
bundled pack (compared case-insensitively), it is an *alternate*, listed by ``asdesk models`` and reachable only
by the explicit id ``user:<id>`` (e.g. ``--model user:knee-xray-oa``), with a warning; the bundled pack is used
for that id and for automatic choice. Between two user-installed packs with the same id, the higher version
wins (on equal versions the one found first). Every pack that is not used is named in the error list, with
the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asdesk.core import CardError, ModelInfo, ModelNotFoundError
from asdesk.core import paths as core_paths
from asdesk.inference.card import ModelCard
from asdesk.inference.runtime import input_fits, model_input_shape
from asdesk.inference.trust import (
    CARD_FILE,
    MODEL_FILE,
    SIGNATURE_FILE,
    PackSignatureError,
    PackVerificationError,
    card_files,
    check_pins,
    optional_files,
    require_signed,
    sha256_file,
    verify_files,
    verify_signature,
)

LOGGER = logging.getLogger(__name__)

ORIGIN_BUNDLED = "bundled"
ORIGIN_USER = "user"
USER_ID_PREFIX = "user:"
"""Prefix of the explicit id of a user-installed pack, e.g. ``user:knee-xray-oa``."""

__all__ = [
    "CARD_FILE", "MODEL_FILE", "ORIGIN_BUNDLED", "ORIGIN_USER", "SIGNATURE_FILE", "USER_ID_PREFIX", "ModelPack",
    "PackProblem", "PackScan", "PackSignatureError", "PackVerificationError", "default_pack_directories",
    "discover_packs", "find_pack", "find_user_pack", "load_pack", "scan_packs", "sha256_file", "write_pack",
]


@dataclass(frozen=True)
class ModelPack:
    """A model pack on disk: its folder, its validated card and where it comes from.

    Attributes
    ----------
    path : Path
        The pack folder (holding ``model.keras`` and ``card.json``).
    card : ModelCard
        The parsed, validated ``card.json``.
    origin : str
        ``"bundled"`` (shipped with asdesk, pinned) or ``"user"`` (installed into the user's model folder).
    signer : str
        For a user-installed pack, the fingerprint of the trusted key that signed its card; ``""`` if unsigned.
    alias : str
        ``"user:<id>"`` for a user-installed pack whose id a bundled pack has: the only id it is chosen by.
    """

    path: Path
    card: ModelCard
    origin: str = ORIGIN_USER
    signer: str = ""
    alias: str = ""

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

    @property
    def selection_id(self) -> str:
        """The id to choose this pack by (``--model``): :attr:`alias` when set, else the card's id."""
        return self.alias or self.card.id

    @property
    def origin_label(self) -> str:
        """``"bundled"``, ``"user-installed, signed (key <fingerprint>)"`` or ``"user-installed, unsigned"``."""
        if self.origin == ORIGIN_BUNDLED:
            return "bundled"
        return f"user-installed, signed (key {self.signer})" if self.signer else "user-installed, unsigned"

    def model_info(self) -> ModelInfo:
        """Pack id, version, hash and origin for results and reports (``card.model_info()`` plus the origin)."""
        return dataclasses.replace(self.card.model_info(), origin=self.origin_label)

    def files(self) -> dict[str, str]:
        """Every file the card lists, with its SHA-256 (:func:`asdesk.inference.trust.card_files`)."""
        return card_files(self.card.raw, str(self.card_path))

    def optional_files(self) -> frozenset[str]:
        """Files the pack may leave out: ``model.keras`` in the deployment form (:func:`trust.optional_files`)."""
        return optional_files(self.card.raw)

    def verify_hash(self, skip: frozenset[str] = frozenset()) -> str:
        """Check that ``model.keras`` and every other file the card lists have the SHA-256 the card states.

        Parameters
        ----------
        skip : frozenset of str
            Listed files not to hash (the ONNX engine skips ``model.keras``, which it never reads); the pins or
            the signature still cover them through the card.

        Returns
        -------
        str
            The hash of ``model.keras`` (equal to ``card.sha256``).

        Raises
        ------
        ModelHashMismatchError
            A file differs from the one the card describes (altered, swapped or damaged).
        CardError
            A listed file is missing or unreadable.
        """
        files = {name: digest for name, digest in self.files().items() if name not in skip}
        verify_files(self.path, files, self.card.id, self.card.version, self.optional_files())
        return self.card.sha256


def _read_card(folder: Path) -> tuple[bytes, ModelCard]:
    """``card.json``'s bytes and the card parsed from exactly those bytes."""
    path = folder / CARD_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise CardError(f"{path}: no card.json; a model pack is a folder with model.keras and card.json") from error
    except OSError as error:
        raise CardError(f"{path}: cannot read the card ({error}); check the file permissions") from error
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CardError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise CardError(f"{path}: a card is a JSON object")
    return data, ModelCard.from_dict(document, source=str(path))


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def origin_of(folder: str | Path) -> str:
    """``"bundled"`` when ``folder`` is directly in the bundled models folder, else ``"user"``."""
    return ORIGIN_BUNDLED if _same_folder(Path(folder).parent, core_paths.bundled_models_dir()) else ORIGIN_USER


def load_pack(path: str | Path, verify_hash: bool = True, origin: str | None = None) -> ModelPack:
    """Read a model pack folder and validate it: card, pins (bundled) or signature (user-installed), files.

    Parameters
    ----------
    path : str or Path
        The pack folder, or its ``card.json``.
    verify_hash : bool
        Whether to hash every file the card lists (reads the whole model).
    origin : {"bundled", "user"}, optional
        Where the pack comes from; default :func:`origin_of` (bundled when the folder is in the bundled models
        folder). A bundled pack must match its pins; a user-installed one its ``card.sig`` when it has one.

    Returns
    -------
    ModelPack

    Raises
    ------
    CardError
        ``card.json`` is missing, not JSON or invalid (see :meth:`ModelCard.from_dict`), or a file the card
        lists is missing.
    PackVerificationError
        A bundled pack is not pinned or its card differs from the pinned one; a user-installed pack's
        ``card.sig`` does not verify (:class:`PackSignatureError`), or it is unsigned while
        ``ASDESK_REQUIRE_SIGNED_PACKS=1``.
    ModelHashMismatchError
        ``verify_hash`` is true and a file does not have the card's SHA-256; the message names the pack, the
        file and both hashes and says to reinstall the pack.
    """
    folder = Path(path)
    if folder.name == CARD_FILE and folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise CardError(f"{folder}: not a folder; a model pack is a folder with {MODEL_FILE} and {CARD_FILE}")
    origin = origin_of(folder) if origin is None else origin
    if origin not in (ORIGIN_BUNDLED, ORIGIN_USER):
        raise ValueError(f"origin must be {ORIGIN_BUNDLED!r} or {ORIGIN_USER!r}, got {origin!r}")
    card_bytes, card = _read_card(folder)
    files = card_files(card.raw, str(folder / CARD_FILE))
    signer = ""
    if origin == ORIGIN_BUNDLED:
        check_pins(folder, card_bytes, files, card.id)
    else:
        signer = verify_signature(folder, card_bytes, card.id) or ""
        if not signer and require_signed():
            raise PackVerificationError(
                f"user-installed model pack {card.id!r} at {folder} is not signed (no {SIGNATURE_FILE}) and "
                "ASDESK_REQUIRE_SIGNED_PACKS is set; get a signed pack from its publisher, or unset "
                "ASDESK_REQUIRE_SIGNED_PACKS to use unsigned packs (marked 'user-installed, unsigned')")
    pack = ModelPack(path=folder, card=card, origin=origin, signer=signer)
    optional = optional_files(card.raw)
    for name in files:
        if name not in optional and not (folder / name).is_file():
            raise CardError(f"model pack {card.id!r} at {folder}: no {name} beside {CARD_FILE}, which its card "
                            "lists; reinstall the pack")
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


@dataclass(frozen=True)
class PackProblem:
    """A pack folder that cannot be used, and why.

    Attributes
    ----------
    path : Path
        The pack folder.
    origin : str
        ``"bundled"`` or ``"user"``.
    reason : str
        The error, naming the file, what was wrong and what to do.
    pack_id : str
        The card's id when the card could be read, else the folder name.
    """

    path: Path
    origin: str
    reason: str
    pack_id: str = ""


@dataclass(frozen=True)
class PackScan:
    """Everything found in the model folders.

    Attributes
    ----------
    packs : list of ModelPack
        The packs in use: one per id, sorted by id; a bundled pack's id always goes to the bundled pack.
    alternates : list of ModelPack
        User-installed packs whose id a bundled pack has: usable only by their :attr:`ModelPack.alias`
        (``user:<id>``), never chosen automatically.
    refused : list of PackProblem
        Packs that failed to load or to verify (bad card, missing file, hash, pin or signature).
    notes : list of str
        Packs not used because another pack has their id (and alternates), with the reason.
    """

    packs: list[ModelPack] = field(default_factory=list)
    alternates: list[ModelPack] = field(default_factory=list)
    refused: list[PackProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """One message per refused pack, then the notes (what :func:`discover_packs` returns)."""
        return [problem.reason for problem in self.refused] + list(self.notes)


def scan_packs(directories: Sequence[str | Path] | None = None, verify_hash: bool = False) -> PackScan:
    """Find, verify and sort the model packs in the bundled and user model folders.

    Every sub-folder holding a ``card.json`` is a pack candidate. A folder equal to the bundled models folder
    holds bundled packs (checked against the pins); any other folder holds user-installed packs. Invalid packs
    never stop the search: they are listed as refused.

    Parameters
    ----------
    directories : sequence of str or Path, optional
        Folders to scan; default :func:`default_pack_directories` (bundled, then user). Missing folders are
        skipped silently.
    verify_hash : bool
        Also hash every file every card lists (slow for many or large packs; the engine checks anyway before
        loading a model).

    Returns
    -------
    PackScan
    """
    folders = [Path(d) for d in directories] if directories is not None else default_pack_directories()
    bundled_dir = core_paths.bundled_models_dir()
    scan = PackScan()
    loaded: list[ModelPack] = []
    reserved: set[str] = set()  # ids of bundled packs (lower case): never taken by a user pack
    for directory in folders:
        if not directory.is_dir():
            continue
        origin = ORIGIN_BUNDLED if _same_folder(directory, bundled_dir) else ORIGIN_USER
        try:
            candidates = sorted(p for p in directory.iterdir() if (p / CARD_FILE).is_file())
        except OSError as error:
            scan.refused.append(PackProblem(directory, origin, f"{directory}: cannot list model packs ({error})"))
            continue
        if origin == ORIGIN_BUNDLED:
            from asdesk.inference.trust import bundled_pins

            reserved.update(name.lower() for name in bundled_pins())
            reserved.update(folder.name.lower() for folder in candidates)
        for folder in candidates:
            try:
                pack = load_pack(folder, verify_hash=verify_hash, origin=origin)
            except CardError as error:
                pack_id = _card_id_or_folder(folder)
                if origin == ORIGIN_BUNDLED:
                    reserved.add(pack_id.lower())
                scan.refused.append(PackProblem(folder, origin, str(error), pack_id))
                LOGGER.warning("refusing model pack %s: %s", folder, error)
                continue
            if pack.card.id != folder.name:
                LOGGER.info("model pack folder %s holds pack id %r", folder, pack.card.id)
            if origin == ORIGIN_BUNDLED:
                reserved.add(pack.card.id.lower())
            if not pack.signer and origin == ORIGIN_USER:
                LOGGER.info("model pack %s at %s is user-installed and unsigned", pack.card.id, folder)
            loaded.append(pack)
    chosen: dict[str, ModelPack] = {}
    alternates: dict[str, ModelPack] = {}
    for pack in loaded:
        key = pack.card.id.lower()
        if pack.origin == ORIGIN_USER and key in reserved:
            pack = dataclasses.replace(pack, alias=USER_ID_PREFIX + pack.card.id)
            table = alternates
        else:
            table = chosen
        previous = table.get(key)
        if previous is None:
            table[key] = pack
            continue
        if previous.origin == ORIGIN_USER and _version_key(pack.card.version) > _version_key(previous.card.version):
            winner, loser = pack, previous
        else:  # a bundled pack is never displaced; otherwise the first found stays on equal versions
            winner, loser = previous, pack
        table[key] = winner
        scan.notes.append(
            f"model pack {loser.card.id!r} version {loser.card.version} at {loser.path} is not used: version "
            f"{winner.card.version} at {winner.path} has the same id"
            + (" and is bundled" if winner.origin == ORIGIN_BUNDLED
               else " and a higher version" if _version_key(winner.card.version) != _version_key(loser.card.version)
               else " and was found first")
            + "; give a user-installed pack its own id")
    for key, pack in alternates.items():
        bundled = chosen.get(key)
        message = (f"user-installed model pack {pack.card.id!r} version {pack.card.version} at {pack.path} has the "
                   "id of a bundled pack" + (f" (version {bundled.card.version})" if bundled else "")
                   + f"; it never replaces it: the bundled pack is used, and this one only when chosen "
                   f"explicitly as {pack.alias!r} (--model {pack.alias})")
        scan.notes.append(message)
        LOGGER.warning(message)
    scan.packs.extend(sorted(chosen.values(), key=lambda p: p.card.id))
    scan.alternates.extend(sorted(alternates.values(), key=lambda p: p.card.id))
    return scan


def _card_id_or_folder(folder: Path) -> str:
    try:
        document = json.loads((folder / CARD_FILE).read_bytes())
        if isinstance(document, dict) and isinstance(document.get("id"), str) and document["id"]:
            return document["id"]
    except (OSError, ValueError):
        pass
    return folder.name


def discover_packs(directories: Sequence[str | Path] | None = None,
                   verify_hash: bool = False) -> tuple[list[ModelPack], list[str]]:
    """Find the model packs in use in the bundled and user model folders (see :func:`scan_packs`).

    Parameters
    ----------
    directories : sequence of str or Path, optional
        Folders to scan; default :func:`default_pack_directories` (bundled, then user).
    verify_hash : bool
        Also hash every file every card lists.

    Returns
    -------
    packs : list of ModelPack
        The packs in use, one per id, sorted by id. User-installed packs with a bundled pack's id are not
        among them (see :attr:`PackScan.alternates` and :func:`find_pack` with ``user:<id>``).
    errors : list of str
        One message per pack that could not be used (bad card, missing file, hash, pin or signature
        mismatch) or that is not used because another pack has its id.
    """
    scan = scan_packs(directories, verify_hash=verify_hash)
    return scan.packs, scan.errors


def find_user_pack(pack_id: str, candidates: Iterable[ModelPack] | None = None,
                   directories: Sequence[str | Path] | None = None) -> ModelPack:
    """The user-installed pack chosen explicitly by ``user:<id>``.

    Parameters
    ----------
    pack_id : str
        ``user:<id>`` (prefix and id compared case-insensitively).
    candidates : iterable of ModelPack, optional
        Packs to choose from (e.g. ``scan.packs + scan.alternates``); default a :func:`scan_packs` of
        ``directories``.
    directories : sequence of str or Path, optional
        Passed to :func:`scan_packs` when ``candidates`` is not given.

    Raises
    ------
    ModelNotFoundError
        No user-installed pack has that id.
    """
    if candidates is None:
        scan = scan_packs(directories)
        candidates = [*scan.packs, *scan.alternates]
    candidates = list(candidates)
    wanted = pack_id[len(USER_ID_PREFIX):].lower() if pack_id.lower().startswith(USER_ID_PREFIX) else pack_id.lower()
    found = [p for p in candidates if p.origin == ORIGIN_USER and p.card.id.lower() == wanted]
    if len(found) != 1:
        users = [p.selection_id for p in candidates if p.origin == ORIGIN_USER]
        raise ModelNotFoundError(f"no user-installed model pack with id {pack_id!r}; user-installed packs: "
                                 f"{', '.join(users) or 'none'} (in {core_paths.user_models_dir()}); see "
                                 "'asdesk models'")
    pack = found[0]
    LOGGER.warning("using the %s model pack %s version %s from %s, chosen explicitly as %r", pack.origin_label,
                   pack.card.id, pack.card.version, pack.path, pack_id)
    return pack


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
        ``modality`` and ``body_part`` are ignored. ``user:<id>`` chooses a user-installed pack by its id,
        also one whose id a bundled pack has (see :func:`find_user_pack`).
    modality : str
        The image's DICOM Modality (0008,0060), e.g. ``"MR"``, ``"CR"``; ``""`` for raster files
        (PNG/JPEG/TIFF). Matched case-insensitively against ``card.modalities``; a card accepts raster
        images by listing ``""`` among its modalities.
    body_part : str
        The image's Body Part Examined (0018,0015), e.g. ``"SPINE"``; ``""`` when unknown. Compared
        case-insensitively with ``card.body_parts``.
    packs : sequence of ModelPack, optional
        Candidates; default the packs of :func:`discover_packs` (for ``user:<id>``: the packs and alternates of
        :func:`scan_packs`).

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
    if pack_id and pack_id.lower().startswith(USER_ID_PREFIX):
        return find_user_pack(pack_id, packs)
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
