"""Whether a model pack is the one it claims to be: file hashes, pins of the bundled packs, signed cards.

DESIGN.md ("Model packs are data"): the card is covered by a hash or a signature the app checks, and bundled
packs are pinned. This module holds the checks; :mod:`asdesk.inference.pack` applies them when it loads a pack.

Files a card covers
-------------------
``card["sha256"]`` is the SHA-256 of ``model.keras``. Any other mapping in the card with a ``"file"`` (a path
relative to the pack folder) and a ``"sha256"`` (e.g. ``card["content_gate"]``) names another file of the pack
with its hash (:func:`card_files`); every one of them is checked, not only the model.

Deployment form
---------------
A pack whose card lists an ONNX model (``card["onnx"]["file"]``) runs without ``model.keras``: the installer
ships it without that file (TensorFlow is not in it either). ``model.keras`` is then the one file a pack may
leave out (:func:`optional_files`); when it is present it is still checked. Every other listed file must be
there and match.

Bundled packs: pins
-------------------
The SHA-256 of each bundled pack's ``card.json`` bytes and of every file its card lists are part of the app
(:data:`asdesk.inference.pins.BUNDLED_PINS`, a Python module, so PyInstaller bundles it). A pack in the bundled
models folder whose files do not match its pins, or that has no pins, is refused (:func:`check_pins`). After a
deliberate change to a bundled pack, ``python -m asdesk.inference.pins --update`` writes the new pins.

User-installed packs: Ed25519 signatures
----------------------------------------
A pack in the user's model folder may carry ``card.sig`` beside ``card.json``: an Ed25519 signature over the
exact bytes of ``card.json`` (which state the SHA-256 of every file of the pack), made with a private key its
publisher keeps (``asdesk sign-pack DIR --key KEY.pem``). It is checked with the public keys in
:data:`TRUSTED_KEYS`, which ship with asdesk; their private halves are never in the repository. A pack with a
signature that does not verify (card edited after signing, unknown key, damaged file) is refused; a pack with no
``card.sig`` is usable but marked "user-installed, unsigned" (or refused when ``ASDESK_REQUIRE_SIGNED_PACKS=1``).

Run ``python -m asdesk.inference.trust keygen KEY.pem`` to make a signing key (keep it outside the repository)
and ``python -m asdesk.inference.trust sign PACK_DIR --key KEY.pem`` to sign a pack.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from asdesk.core import CardError, ModelHashMismatchError

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
SIGNATURE_FILE = "card.sig"
SIGNATURE_ALGORITHM = "Ed25519"
REQUIRE_SIGNED_ENV = "ASDESK_REQUIRE_SIGNED_PACKS"
_CHUNK_BYTES = 1 << 20
_MAX_SIGNATURE_BYTES = 4096

TRUSTED_KEYS: dict[str, str] = {
    # fingerprint (first 16 hex digits of the SHA-256 of the raw public key) -> raw Ed25519 public key (hex).
    # The private key is kept outside the repository by the pack publisher (see README, "Model packs").
    # asdesk pack-signing key 1, made 2025-12-01; its private half is not in the repository.
    "524402846161773d": "cd02d9123f57c8c26d4558f637d72bd62ada621680fbab4cb0c5bb2add25bad4",
}
"""Public keys whose signatures make a user-installed pack "signed"."""


class PackVerificationError(CardError):
    """A model pack is not the one its pins or its signature vouch for (altered, swapped or unpinned)."""


class PackSignatureError(PackVerificationError):
    """A user-installed pack's ``card.sig`` does not verify against ``card.json`` with a trusted key."""


# ---------------------------------------------------------------------------------------------------------- hashes
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


def sha256_bytes(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lower-case hexadecimal digits."""
    return hashlib.sha256(data).hexdigest()


def card_files(card: Mapping[str, Any], source: str = CARD_FILE) -> dict[str, str]:
    """Every file of a pack that its card states a SHA-256 for.

    Parameters
    ----------
    card : mapping
        The card document (``ModelCard.raw``).
    source : str
        Named in error messages.

    Returns
    -------
    dict of str to str
        Path relative to the pack folder (POSIX form) -> expected SHA-256 (lower case): ``model.keras`` from
        ``card["sha256"]``, plus every mapping anywhere in the card holding both ``"file"`` and ``"sha256"``.

    Raises
    ------
    CardError
        A listed path leaves the pack folder (absolute, ``..``), names ``card.json`` itself, or a hash is not
        64 hexadecimal digits.
    """
    files: dict[str, str] = {MODEL_FILE: _checked_hash(card.get("sha256"), "sha256", source)}

    def walk(node: Any, where: str) -> None:  # noqa: ANN401 - any JSON value
        if isinstance(node, Mapping):
            if "file" in node and "sha256" in node and isinstance(node["file"], str):
                name = _checked_relative(node["file"], f"{where}.file", source)
                digest = _checked_hash(node["sha256"], f"{where}.sha256", source)
                if files.get(name, digest) != digest:
                    raise CardError(f"{source}: {name} is listed twice with different SHA-256; fix the card")
                files[name] = digest
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")

    walk({key: value for key, value in card.items() if key != "sha256"}, "")
    return files


def optional_files(card: Mapping[str, Any]) -> frozenset[str]:
    """Files a pack may leave out: ``model.keras`` when the card lists an ONNX model (the deployment form).

    Parameters
    ----------
    card : mapping
        The card document (``ModelCard.raw``).

    Returns
    -------
    frozenset of str
        ``{"model.keras"}`` when ``card["onnx"]`` names a file, else empty: a pack without an ONNX model needs
        its Keras model.
    """
    block = card.get("onnx")
    if isinstance(block, Mapping) and isinstance(block.get("file"), str) and block["file"] != MODEL_FILE:
        return frozenset({MODEL_FILE})
    return frozenset()


def _checked_hash(value: Any, field: str, source: str) -> str:  # noqa: ANN401
    text = str(value).lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise CardError(f"{source}: {field} must be 64 hex digits, got {value!r}")
    return text


def _checked_relative(value: str, field: str, source: str) -> str:
    path = PurePosixPath(value.replace("\\", "/"))
    if not value or path.is_absolute() or ".." in path.parts or ":" in value or str(path) in ("", "."):
        raise CardError(f"{source}: {field} is {value!r}; a pack file is named relative to the pack folder, "
                        "inside it")
    if str(path) in (CARD_FILE, SIGNATURE_FILE):
        raise CardError(f"{source}: {field} names {path}, which cannot list its own hash")
    return str(path)


def verify_files(folder: Path, files: Mapping[str, str], pack_id: str, version: str,
                 optional: frozenset[str] = frozenset()) -> None:
    """Check that every file a card lists has the SHA-256 the card states.

    Parameters
    ----------
    folder : Path
        The pack folder.
    files : mapping of str to str
        From :func:`card_files`.
    pack_id, version : str
        Named in error messages.
    optional : frozenset of str
        Files that may be absent (:func:`optional_files`); checked when present.

    Raises
    ------
    ModelHashMismatchError
        A file differs from the one the card describes (altered, swapped or damaged).
    CardError
        A file that is not optional is missing, or a file is unreadable.
    """
    for name, expected in files.items():
        path = folder / name
        if name in optional and not path.exists():
            continue
        try:
            actual = sha256_file(path)
        except FileNotFoundError as error:
            raise CardError(f"model pack {pack_id!r} at {folder}: no {name}, which its card lists; a model pack "
                            f"is a folder with {CARD_FILE} and the files it names: reinstall the pack") from error
        except OSError as error:
            raise CardError(f"model pack {pack_id!r}: cannot read {path} ({error}); check the file permissions "
                            "or reinstall the pack") from error
        if actual != expected:
            raise ModelHashMismatchError(
                f"model pack {pack_id!r} (version {version}) at {folder}: {name} has SHA-256 {actual}, but its "
                f"card expects {expected}; the file was altered, swapped or damaged: reinstall the pack")


# ------------------------------------------------------------------------------------------------------------ pins
def bundled_pins() -> dict[str, dict[str, str]]:
    """The pins compiled into this asdesk: pack folder name -> {file name -> SHA-256}."""
    from asdesk.inference import pins

    return pins.BUNDLED_PINS


def compute_pins(folder: str | Path) -> dict[str, str]:
    """The pins of one pack folder as it is on disk: ``card.json`` and every file its card lists.

    Raises
    ------
    CardError
        The card is missing or not JSON, or a listed file is missing or does not match the card (a pack is
        pinned only when it is consistent).
    """
    folder = Path(folder)
    card_path = folder / CARD_FILE
    try:
        data = card_path.read_bytes()
        document = json.loads(data)
    except FileNotFoundError as error:
        raise CardError(f"{card_path}: no card.json") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CardError(f"{card_path}: not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise CardError(f"{card_path}: a card is a JSON object")
    files = card_files(document, str(card_path))
    verify_files(folder, files, str(document.get("id", folder.name)), str(document.get("version", "?")),
                 optional_files(document))
    return {CARD_FILE: sha256_bytes(data), **dict(sorted(files.items()))}


def check_pins(folder: Path, card_bytes: bytes, files: Mapping[str, str], pack_id: str,
               pins: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Check a bundled pack's card and file list against the pins compiled into asdesk.

    The card's bytes must have the pinned SHA-256 and list exactly the pinned files with the pinned hashes
    (the files themselves are hashed by :func:`verify_files`).

    Parameters
    ----------
    folder : Path
        The pack folder in the bundled models folder; its name is the pin key.
    card_bytes : bytes
        ``card.json`` as read.
    files : mapping of str to str
        :func:`card_files` of that card.
    pack_id : str
        The card's id, for messages.
    pins : mapping, optional
        Default :func:`bundled_pins`.

    Raises
    ------
    PackVerificationError
        No pins for this folder, or the card differs from the pinned one.
    """
    table = bundled_pins() if pins is None else pins
    pinned = table.get(folder.name)
    fix = ("reinstall asdesk; if the change was deliberate (a developer updating a bundled pack), run "
           "'python -m asdesk.inference.pins --update' and commit asdesk/inference/pins.py")
    if pinned is None:
        raise PackVerificationError(
            f"bundled model pack {pack_id!r} at {folder} is not pinned: this asdesk has no SHA-256 for it, so it "
            f"is not one of the packs it was released with (pinned: {', '.join(sorted(table)) or 'none'}); "
            f"install your own packs into the user model folder instead, or {fix}")
    actual = sha256_bytes(card_bytes)
    if actual != pinned.get(CARD_FILE):
        raise PackVerificationError(
            f"bundled model pack {pack_id!r} at {folder}: {CARD_FILE} has SHA-256 {actual}, but this asdesk "
            f"pins {pinned.get(CARD_FILE)}; the card (thresholds, labels, stated performance, model hash) was "
            f"altered: {fix}")
    expected = {name: digest for name, digest in pinned.items() if name != CARD_FILE}
    if dict(files) != expected:
        raise PackVerificationError(
            f"bundled model pack {pack_id!r} at {folder}: its card lists files {dict(files)} but the pins list "
            f"{expected}; {fix}")


# ------------------------------------------------------------------------------------------------------ signatures
def key_fingerprint(public_key_raw: bytes) -> str:
    """First 16 hex digits of the SHA-256 of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


def require_signed() -> bool:
    """Whether unsigned user-installed packs are refused (``ASDESK_REQUIRE_SIGNED_PACKS=1``)."""
    return os.environ.get(REQUIRE_SIGNED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def verify_signature(folder: Path, card_bytes: bytes, pack_id: str,
                     keys: Mapping[str, str] | None = None) -> str | None:
    """Check ``card.sig`` of a user-installed pack against ``card.json``'s bytes.

    Parameters
    ----------
    folder : Path
        The pack folder.
    card_bytes : bytes
        ``card.json`` as read (the signature covers exactly these bytes).
    pack_id : str
        For messages.
    keys : mapping of str to str, optional
        Fingerprint -> raw public key (hex); default :data:`TRUSTED_KEYS`.

    Returns
    -------
    str or None
        The fingerprint of the key that signed the card; ``None`` when the pack has no ``card.sig``.

    Raises
    ------
    PackSignatureError
        ``card.sig`` is unreadable or malformed, names a key asdesk does not trust, or does not verify
        (the card was changed after signing, or the signature belongs to another card).
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = folder / SIGNATURE_FILE
    if not path.exists():
        return None
    trusted = TRUSTED_KEYS if keys is None else keys
    where = f"model pack {pack_id!r} at {folder}: {SIGNATURE_FILE}"
    try:
        if path.stat().st_size > _MAX_SIGNATURE_BYTES:
            raise PackSignatureError(f"{where} is larger than {_MAX_SIGNATURE_BYTES} bytes; it is not a pack "
                                     "signature: remove it or sign the pack again")
        document = json.loads(path.read_bytes())
        algorithm, fingerprint = document["algorithm"], str(document["key"])
        signature = base64.b64decode(document["signature"], validate=True)
    except PackSignatureError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PackSignatureError(f"{where} is not a readable signature ({error!r}); sign the pack again with "
                                 "'asdesk sign-pack' or remove the pack") from error
    if algorithm != SIGNATURE_ALGORITHM:
        raise PackSignatureError(f"{where} uses {algorithm!r}; asdesk accepts only {SIGNATURE_ALGORITHM}")
    public_hex = trusted.get(fingerprint)
    if public_hex is None:
        raise PackSignatureError(
            f"{where} was made with key {fingerprint}, which this asdesk does not trust (trusted keys: "
            f"{', '.join(sorted(trusted)) or 'none'}); get the pack from its publisher, or remove {SIGNATURE_FILE} "
            "to use it as an unsigned user-installed pack")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(signature, card_bytes)
    except (InvalidSignature, ValueError) as error:
        raise PackSignatureError(
            f"{where} does not match {CARD_FILE} (key {fingerprint}): the card (thresholds, labels, stated "
            "performance or model hash) was changed after it was signed, or the signature belongs to another "
            "card; reinstall the pack from its publisher") from error
    return fingerprint


def load_private_key(path: str | Path) -> Any:  # noqa: ANN401 - an Ed25519PrivateKey
    """Read an Ed25519 private key (PEM, PKCS#8, unencrypted) as written by :func:`generate_key`.

    Raises
    ------
    CardError
        The file is missing, unreadable or not an Ed25519 private key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as error:
        raise CardError(f"{path}: cannot read the signing key ({error}); pass --key with your key file") from error
    except (ValueError, TypeError) as error:
        raise CardError(f"{path}: not an unencrypted PEM private key ({error}); make one with "
                        "'python -m asdesk.inference.trust keygen KEY.pem'") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise CardError(f"{path}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def public_key_hex(private_key: Any) -> str:  # noqa: ANN401 - an Ed25519PrivateKey
    """The raw public key of an Ed25519 private key, as 64 hex digits (the form :data:`TRUSTED_KEYS` holds)."""
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def generate_key(path: str | Path) -> tuple[str, str]:
    """Write a new Ed25519 private key (PEM, owner-readable only) and return its fingerprint and public key.

    Parameters
    ----------
    path : str or Path
        Where to write the key; must not exist. Keep it outside any repository.

    Returns
    -------
    fingerprint, public_hex : str
        What to add to :data:`TRUSTED_KEYS` for asdesk to trust packs signed with this key.

    Raises
    ------
    FileExistsError
        ``path`` exists (a key is never overwritten).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(pem)
    public_hex = public_key_hex(key)
    return key_fingerprint(bytes.fromhex(public_hex)), public_hex


def sign_pack(folder: str | Path, key_path: str | Path) -> Path:
    """Sign a pack's ``card.json`` with an Ed25519 key: writes ``card.sig`` beside it.

    The pack is checked first: its card must be JSON and every file it lists must have the stated SHA-256,
    so a signature never vouches for a pack that does not match its card.

    Parameters
    ----------
    folder : str or Path
        The pack folder.
    key_path : str or Path
        The private key (:func:`generate_key`).

    Returns
    -------
    Path
        The written ``card.sig``.

    Raises
    ------
    CardError
        The pack is inconsistent or the key cannot be read.
    """
    folder = Path(folder)
    key = load_private_key(key_path)
    card_path = folder / CARD_FILE
    compute_pins(folder)  # card readable, every listed file present and matching
    card_bytes = card_path.read_bytes()
    fingerprint = key_fingerprint(bytes.fromhex(public_key_hex(key)))
    document = {"algorithm": SIGNATURE_ALGORITHM, "key": fingerprint,
                "signature": base64.b64encode(key.sign(card_bytes)).decode("ascii"),
                "card_sha256": sha256_bytes(card_bytes)}
    target = folder / SIGNATURE_FILE
    temporary = folder / (SIGNATURE_FILE + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m asdesk.inference.trust keygen KEY.pem`` / ``sign PACK_DIR --key KEY.pem``."""
    parser = argparse.ArgumentParser(prog="python -m asdesk.inference.trust",
                                     description="Make an Ed25519 pack-signing key, or sign a model pack's card.")
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write a new private key (keep it outside the repository)")
    keygen.add_argument("key", type=Path)
    sign = commands.add_parser("sign", help="write PACK_DIR/card.sig")
    sign.add_argument("pack", type=Path)
    sign.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            fingerprint, public_hex = generate_key(args.key)
            print(f"wrote {args.key} (keep it private, outside the repository)")
            print(f"to trust it, add to TRUSTED_KEYS in asdesk/inference/trust.py:\n    {fingerprint!r}: "
                  f"{public_hex!r},")
            return 0
        target = sign_pack(args.pack, args.key)
        print(f"wrote {target}")
        return 0
    except (CardError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
