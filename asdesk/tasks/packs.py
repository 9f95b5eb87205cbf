"""Model-pack management for the command line and the window: list, verify and sign packs.

The CLI and the GUI reach :mod:`asdesk.inference` only through :mod:`asdesk.tasks` (DESIGN.md layers, checked by
import-linter); this module is that door for the pack tools of ``asdesk models`` and ``asdesk sign-pack``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["load_user_pack", "pack_directories", "scan_packs", "sign_pack"]


def pack_directories() -> list[Path]:
    """The folders searched for model packs: the bundled ``models/`` and the user's model folder."""
    from asdesk.inference.pack import default_pack_directories

    return default_pack_directories()


def scan_packs(verify_hash: bool = True) -> Any:  # noqa: ANN401 - an asdesk.inference.PackScan
    """Every pack found, verified (pins, signatures, every file's SHA-256): :func:`asdesk.inference.scan_packs`.

    Returns
    -------
    asdesk.inference.PackScan
        ``packs`` (usable), ``alternates`` (user packs reachable only as ``user:<id>``) and the refused ones.
    """
    from asdesk.inference.pack import scan_packs as scan

    return scan(verify_hash=verify_hash)


def sign_pack(folder: str | Path, key: str | Path) -> Path:
    """Sign a pack's card with an Ed25519 private key (:func:`asdesk.inference.trust.sign_pack`).

    Returns
    -------
    Path
        The ``card.sig`` written.

    Raises
    ------
    asdesk.core.CardError
        The pack's files do not match its card, or the key cannot be read.
    """
    from asdesk.inference.trust import sign_pack as sign

    return sign(folder, key)


def load_user_pack(folder: str | Path) -> Any:  # noqa: ANN401 - an asdesk.inference.ModelPack
    """Load a folder as a user-installed pack (signature checked; hashes not re-read).

    Raises
    ------
    asdesk.inference.PackSignatureError
        Its signature is bad or from a key asdesk does not trust.
    CardError
        The card is invalid.
    """
    from asdesk.inference.pack import ORIGIN_USER, load_pack

    return load_pack(folder, verify_hash=False, origin=ORIGIN_USER)
