"""A small, thread-safe cache of loaded :class:`~asdesk.inference.InferenceEngine` objects.

Loading a model pack (reading ``model.keras``, checking its SHA-256, tracing the ``tf.function``) takes
seconds; analysing an image takes a fraction of one. The CLI and the GUI therefore keep the engines they
loaded in an :class:`EngineCache` and look them up by pack id, or by the modality and body part of an image
when no pack was named.

The cache holds at most ``max_engines`` engines (least recently used are dropped first). Engines are keyed
by the id the pack is chosen by, its folder *and* the SHA-256 its card states, so a pack that was replaced on
disk is loaded again and a user-installed pack with a bundled pack's id (chosen as ``user:<id>``) never shares
the bundled pack's engine.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asdesk.core import ImageRecord

if TYPE_CHECKING:
    from asdesk.inference import InferenceEngine, ModelPack

LOGGER = logging.getLogger(__name__)

__all__ = ["EngineCache", "configure_device", "default_engines", "pack_directories"]


class EngineCache:
    """Loaded inference engines by pack id, shared by everything in one process.

    Parameters
    ----------
    directories : sequence of Path, optional
        Folders holding model packs (``<dir>/<pack-id>/card.json``). ``None`` means the bundled models
        and the user's model folder (:func:`asdesk.inference.discover_packs` decides).
    max_engines : int
        How many engines stay loaded at once (>= 1).

    Attributes
    ----------
    on_loading : callable or None
        Called with the :class:`~asdesk.inference.ModelPack` just before a pack that is not loaded yet is
        loaded (on the thread that asked for it), so a window can say "Loading model …".

    Notes
    -----
    All methods are thread-safe. An engine itself is *not* made thread-safe by the cache: one thread at a
    time should call its ``analyze`` (DESIGN.md, "One thread owns the TensorFlow model").
    """

    def __init__(self, directories: Sequence[str | Path] | None = None, max_engines: int = 3) -> None:
        if max_engines < 1:
            raise ValueError(f"max_engines must be at least 1, got {max_engines}")
        self.directories = None if directories is None else [Path(d) for d in directories]
        self.max_engines = int(max_engines)
        self._lock = threading.RLock()
        self._engines: OrderedDict[tuple[str, str, str], InferenceEngine] = OrderedDict()
        self._packs: list[ModelPack] | None = None
        self._alternates: list[ModelPack] = []
        self._pack_errors: list[Any] = []
        self._routes: dict[tuple[str, str], ModelPack] = {}
        self.on_loading: Callable[[ModelPack], None] | None = None

    # -- discovery -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Forget the discovered packs, so the next lookup scans the model folders again.

        Loaded engines are kept; an engine whose pack changed on disk is reloaded on its next lookup.
        """
        with self._lock:
            self._packs = None
            self._pack_errors = []
            self._alternates = []
            self._routes.clear()

    def packs(self) -> tuple[list[ModelPack], list[Any]]:
        """The model packs found in the model folders, and the broken ones.

        Returns
        -------
        packs : list of ModelPack
            Valid packs, as :func:`asdesk.inference.discover_packs` returns them.
        errors : list
            One entry per pack that could not be read (its error), for ``asdesk models``.
        """
        with self._lock:
            if self._packs is None:
                from asdesk.inference import scan_packs

                scan = scan_packs(self.directories)
                self._packs, self._pack_errors = list(scan.packs), list(scan.errors)
                self._alternates = list(scan.alternates)
                LOGGER.info("found %d model pack(s), %d broken", len(self._packs), len(self._pack_errors))
            return list(self._packs), list(self._pack_errors)

    def find(self, pack_id: str | None = None, modality: str = "", body_part: str = "") -> ModelPack:
        """The pack with ``pack_id``, or the one whose card covers ``modality`` and ``body_part``.

        ``user:<id>`` names a user-installed pack explicitly, also one whose id a bundled pack has (never
        chosen otherwise; see :mod:`asdesk.inference.pack`).

        Raises
        ------
        ModelNotFoundError
            No pack has that id, or none covers that modality and body part.
        """
        from asdesk.inference import USER_ID_PREFIX, find_pack, find_user_pack

        packs, _errors = self.packs()
        if pack_id and pack_id.lower().startswith(USER_ID_PREFIX):
            with self._lock:
                alternates = list(self._alternates)
            return find_user_pack(pack_id, [*packs, *alternates])
        if pack_id:
            return find_pack(pack_id=pack_id, packs=packs)
        route = ((modality or "").strip().upper(), (body_part or "").strip().upper())
        with self._lock:
            pack = self._routes.get(route)
            if pack is None:  # decided (and any warning logged) once per modality and body part
                pack = find_pack(modality=route[0], body_part=route[1], packs=packs)
                self._routes[route] = pack
            return pack

    # -- engines ---------------------------------------------------------------------------------
    def engine_for_pack(self, pack: ModelPack) -> InferenceEngine:
        """The engine of ``pack``, created and loaded (hash checked, model in memory) on first use.

        Raises
        ------
        CardError, ModelHashMismatchError
            The pack cannot be loaded (see :class:`asdesk.inference.InferenceEngine`).
        """
        key = (pack.selection_id, str(pack.path), pack.card.sha256)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            from asdesk.inference.onnx_engine import create_engine

            if self.on_loading is not None:
                self.on_loading(pack)
            LOGGER.info("loading model pack %s %s from %s", pack.card.id, pack.card.version, pack.path)
            engine = create_engine(pack)  # ONNX Runtime when the pack has model.onnx, else TensorFlow
            engine.load()  # logs the pack, its hash and the device it runs on
            self._engines[key] = engine
            while len(self._engines) > self.max_engines:
                dropped, _ = self._engines.popitem(last=False)
                LOGGER.info("unloaded model pack %s", dropped[0])
            return engine

    def get(self, pack_id: str) -> InferenceEngine:
        """The engine of the pack with id ``pack_id``.

        Raises
        ------
        ModelNotFoundError
            No pack has that id.
        """
        return self.engine_for_pack(self.find(pack_id=pack_id))

    def for_record(self, record: ImageRecord) -> InferenceEngine:
        """The engine of the pack whose metadata gate accepts the image (:func:`asdesk.tasks.gates.choose_pack`).

        Raises
        ------
        NoPackAcceptsError
            (a :class:`~asdesk.core.ModelNotFoundError`) No pack was made for this image; the message gives
            each pack's reason.
        """
        from asdesk.tasks.gates import choose_pack

        packs, _errors = self.packs()
        return self.engine_for_pack(choose_pack(record.metadata, packs))

    def select(self, record: ImageRecord, pack_id: str | None = None) -> InferenceEngine:
        """``get(pack_id)`` when a pack is named, else ``for_record(record)``."""
        return self.get(pack_id) if pack_id else self.for_record(record)

    def is_loaded(self, pack: ModelPack) -> bool:
        """Whether ``pack``'s engine is loaded now (looking it up does not load it)."""
        with self._lock:
            return (pack.selection_id, str(pack.path), pack.card.sha256) in self._engines

    def loaded(self) -> list[str]:
        """Ids of the packs loaded now, least recently used first."""
        with self._lock:
            return [key[0] for key in self._engines]

    def clear(self) -> None:
        """Unload every engine and forget the discovered packs."""
        with self._lock:
            self._engines.clear()
            self._packs = None
            self._pack_errors = []
            self._alternates = []
            self._routes.clear()


_DEFAULT: EngineCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_engines() -> EngineCache:
    """The process-wide :class:`EngineCache` over the bundled and the user's model folders."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = EngineCache()
        return _DEFAULT


def configure_device(tensorflow: bool = False) -> str:
    """Import the runtime, choose the device that will run models and describe it.

    Parameters
    ----------
    tensorflow : bool
        Describe TensorFlow's device (``"CPU (2 threads)"``, ``"GPU:0 (...)"``;
        :func:`asdesk.inference.configure_device`, which imports TensorFlow) even when the lean runtime is
        installed; training and evaluation need it.

    Returns
    -------
    str
        ONNX Runtime's device (``"CPU (onnxruntime 1.x, 2 threads)"``,
        :func:`asdesk.inference.onnx_engine.describe_device`) when onnxruntime is installed and
        ``tensorflow`` is false (packs with ``model.onnx`` run there: :meth:`EngineCache.engine_for_pack`),
        else TensorFlow's. The CLI and the window call this, so they need not import :mod:`asdesk.inference`.
    """
    from asdesk.inference.onnx_engine import describe_device, onnxruntime_available

    if not tensorflow and onnxruntime_available():
        return describe_device()
    from asdesk.inference import configure_device as configure

    return configure()


def pack_directories() -> list[Path]:
    """The folders searched for model packs: the bundled ``models/`` and the user's model folder."""
    from asdesk.inference.pack import default_pack_directories

    return default_pack_directories()
