"""Packs cannot be altered or swapped (issue 9): pins of the bundled packs, signed user packs, tamper tests.

The tamper tests work on copies of the REAL shipped packs (``models/``) in a temporary install folder (the bundled
models folder is pointed there), and on the tiny real pack of ``conftest.py`` as a user-installed pack.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asdesk import cli
from asdesk.core import CardError, ModelHashMismatchError, ModelNotFoundError, paths
from asdesk.inference import (
    InferenceEngine,
    PackSignatureError,
    PackVerificationError,
    find_pack,
    load_pack,
    scan_packs,
    sha256_file,
    trust,
)
from asdesk.inference import pins as pin_module
from asdesk.tasks import EngineCache

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
KNEE = "knee-xray-oa"
SHIPPED = sorted(p.name for p in MODELS.iterdir() if (p / "card.json").is_file()) if MODELS.is_dir() else []


def edit_card(folder: Path, **changes: object) -> None:
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    card.update(changes)
    (folder / "card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")


@pytest.fixture
def install(tmp_path, monkeypatch, asdesk_home):
    """An install folder whose bundled models folder holds a copy of the real knee pack; and the user folder."""
    bundled = tmp_path / "install" / "models"
    shutil.copytree(MODELS / KNEE, bundled / KNEE)
    monkeypatch.setattr(paths, "bundled_models_dir", lambda: bundled)
    user = paths.user_models_dir()
    user.mkdir(parents=True)
    return bundled, user


@pytest.fixture
def signing_key(tmp_path, monkeypatch):
    """A throwaway Ed25519 key, trusted for this test only (added to trust.TRUSTED_KEYS)."""
    key = tmp_path / "keys" / "throwaway.pem"
    key.parent.mkdir()
    fingerprint, public_hex = trust.generate_key(key)
    monkeypatch.setitem(trust.TRUSTED_KEYS, fingerprint, public_hex)
    return key, fingerprint


def ids(packs) -> list[str]:
    return [pack.card.id for pack in packs]


def models_json(capsys) -> dict:
    assert cli.main(["models", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------------------------- pins
def test_the_pins_match_the_shipped_packs():
    """Fails when models/* and asdesk/inference/pins.py disagree: run `python -m asdesk.inference.pins --update`."""
    actual = pin_module.compute_all(MODELS)
    assert set(actual) == set(SHIPPED) and SHIPPED
    assert pin_module.differences(actual, pin_module.BUNDLED_PINS) == [], (
        "the bundled packs changed: run 'python -m asdesk.inference.pins --update' and commit pins.py")
    for name in SHIPPED:
        assert pin_module.BUNDLED_PINS[name]["model.keras"] == sha256_file(MODELS / name / "model.keras")


def test_pins_command_checks_and_updates(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(MODELS / KNEE, models / KNEE)
    command = [sys.executable, "-m", "asdesk.inference.pins", "--models", str(models)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1  # the pins also list the SIJ pack, absent here
    assert "sij-mri-stir-inflammation: pinned but not in the models folder" in done.stderr
    edit_card(models / KNEE, version="9.9.9")
    assert any(line.startswith(f"{KNEE}/card.json: on disk")
               for line in pin_module.differences(pin_module.compute_all(models), pin_module.BUNDLED_PINS))
    module = tmp_path / "pins_copy.py"
    shutil.copy(pin_module.__file__, module)
    pin_module.write_pins(pin_module.compute_all(models), module)
    namespace: dict = {}
    exec(compile(module.read_text(encoding="utf-8"), str(module), "exec"), namespace)  # noqa: S102
    assert namespace["BUNDLED_PINS"] == {KNEE: trust.compute_pins(models / KNEE)}
    assert namespace["BUNDLED_PINS"][KNEE]["card.json"] == sha256_file(models / KNEE / "card.json")


@pytest.mark.parametrize("pack_id", SHIPPED)
def test_shipped_packs_load_as_bundled_and_pinned(pack_id):
    pack = load_pack(MODELS / pack_id, verify_hash=True)
    assert pack.origin == "bundled" and pack.origin_label == "bundled" and not pack.alias
    info = pack.model_info()
    assert (info.pack_id, info.sha256, info.origin) == (pack_id, pack.card.sha256, "bundled")


# ----------------------------------------------------------------------------------------- tampered bundled packs
def test_an_edited_threshold_in_a_bundled_card_is_refused(install, capsys):
    bundled, _user = install
    card = json.loads((bundled / KNEE / "card.json").read_text(encoding="utf-8"))
    card["operating_points"]["balanced"]["threshold"] = 0.05
    (bundled / KNEE / "card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    with pytest.raises(PackVerificationError, match=r"card.json has SHA-256 .* but this asdesk pins") as caught:
        load_pack(bundled / KNEE, verify_hash=False)
    assert str(bundled / KNEE) in str(caught.value) and "pins --update" in str(caught.value)
    scan = scan_packs()
    assert scan.packs == [] and [p.pack_id for p in scan.refused] == [KNEE]
    with pytest.raises(ModelNotFoundError):  # nothing else takes its place
        find_pack(modality="CR", body_part="KNEE", packs=scan.packs)
    document = models_json(capsys)
    assert document["packs"] == []
    assert document["refused"][0]["id"] == KNEE and document["refused"][0]["usable"] is False
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert f"NOT USABLE: {KNEE} (bundled)" in out and "in use" not in out


def test_edited_model_bytes_in_a_bundled_pack_are_refused(install, capsys):
    bundled, _user = install
    model = bundled / KNEE / "model.keras"
    data = bytearray(model.read_bytes())
    data[len(data) // 3] ^= 0x40
    model.write_bytes(bytes(data))
    pack = load_pack(bundled / KNEE, verify_hash=False)  # the card still matches its pin
    with pytest.raises(ModelHashMismatchError, match="model.keras has SHA-256"):
        pack.verify_hash()
    with pytest.raises(ModelHashMismatchError):  # the engine hashes before it loads anything
        InferenceEngine(pack).load()
    assert [p.pack_id for p in scan_packs(verify_hash=True).refused] == [KNEE]
    document = models_json(capsys)
    assert KNEE not in [p["id"] for p in document["packs"]]
    assert "altered, swapped or damaged" in document["refused"][0]["reason"]


def test_the_deployment_form_without_model_keras_is_pinned_loads_and_analyses(install):
    """The installer ships packs without model.keras (ONNX Runtime runs model.onnx): still pinned, still usable."""
    from asdesk.inference.onnx_engine import OnnxEngine, onnxruntime_available
    from asdesk.io import read_image

    bundled, _user = install
    (bundled / KNEE / "model.keras").unlink()
    pack = load_pack(bundled / KNEE, verify_hash=True)
    assert pack.optional_files() == {"model.keras"} and pack.origin == "bundled"
    assert [p.id for p in scan_packs(verify_hash=True).packs] == [KNEE]
    if not onnxruntime_available():
        pytest.skip("onnxruntime is not installed")
    sample = next((REPO / "resources" / "samples").glob("*.png"))
    (deployed,) = OnnxEngine(pack).infer([read_image(sample)])
    (full,) = OnnxEngine(load_pack(MODELS / KNEE)).infer([read_image(sample)])
    assert deployed.probability == pytest.approx(full.probability, abs=1e-7)
    assert np.array_equal(deployed.heatmap, full.heatmap)
    with pytest.raises(CardError, match="deployment form"):  # the TensorFlow runtime says why it cannot run it
        InferenceEngine(pack).load()


def test_only_model_keras_may_be_left_out_and_only_beside_an_onnx_model(install):
    bundled, _user = install
    (bundled / KNEE / "model.onnx").rename(bundled / "elsewhere.onnx")
    with pytest.raises(CardError, match="no model.onnx"):
        load_pack(bundled / KNEE, verify_hash=True)
    (bundled / "elsewhere.onnx").rename(bundled / KNEE / "model.onnx")
    card = json.loads((bundled / KNEE / "card.json").read_text(encoding="utf-8"))
    del card["onnx"]
    assert trust.optional_files(card) == frozenset()  # a Keras-only pack needs its model
    (bundled / KNEE / "model.keras").write_bytes(b"damaged")
    with pytest.raises(ModelHashMismatchError, match="model.keras has SHA-256"):  # present: still checked
        load_pack(bundled / KNEE, verify_hash=True)


def test_a_different_model_with_the_cards_hash_edited_is_refused(install, tiny_pack, capsys):
    bundled, user = install
    shutil.copy(tiny_pack.model_path, bundled / KNEE / "model.keras")
    edit_card(bundled / KNEE, sha256=sha256_file(tiny_pack.model_path))
    with pytest.raises(PackVerificationError, match="card.json has SHA-256"):
        load_pack(bundled / KNEE, verify_hash=True)
    assert [p.pack_id for p in scan_packs(verify_hash=True).refused] == [KNEE]
    # the same swap as a user-installed pack: never under the genuine id, marked unsigned
    swapped = user / KNEE
    shutil.copytree(MODELS / KNEE, swapped)
    shutil.copy(tiny_pack.model_path, swapped / "model.keras")
    edit_card(swapped, sha256=sha256_file(tiny_pack.model_path))
    scan = scan_packs(verify_hash=True)
    assert scan.packs == [] and [p.selection_id for p in scan.alternates] == [f"user:{KNEE}"]
    assert scan.alternates[0].model_info().origin == "user-installed, unsigned"
    with pytest.raises(ModelNotFoundError):
        find_pack(KNEE, packs=scan.packs)


def test_an_unpinned_pack_in_the_bundled_folder_is_refused(install, tiny_pack):
    bundled, _user = install
    shutil.copytree(tiny_pack.path, bundled / "extra-pack")
    with pytest.raises(PackVerificationError, match="is not pinned"):
        load_pack(bundled / "extra-pack", verify_hash=False)
    scan = scan_packs()
    assert [p.card.id for p in scan.packs] == [KNEE]
    assert [p.path.name for p in scan.refused] == ["extra-pack"]


# ---------------------------------------------------------------------------------- user packs never replace it
def test_a_user_pack_with_the_bundled_id_and_a_higher_version_never_replaces_it(install, capsys):
    bundled, user = install
    shutil.copytree(MODELS / KNEE, user / "knee-update")
    card = json.loads((user / "knee-update" / "card.json").read_text(encoding="utf-8"))
    card["version"] = "99.0"
    card["operating_points"]["balanced"]["threshold"] = 0.05
    (user / "knee-update" / "card.json").write_text(json.dumps(card), encoding="utf-8")
    shutil.copytree(MODELS / KNEE, user / "shouting")
    edit_card(user / "shouting", id=KNEE.upper(), version="1.0.0")  # a case variant is the same id

    scan = scan_packs()
    assert [(p.card.id, p.origin, p.path) for p in scan.packs] == [(KNEE, "bundled", bundled / KNEE)]
    assert [(p.selection_id, p.path) for p in scan.alternates] == [(f"user:{KNEE}", user / "knee-update")]
    assert any("never replaces it" in note and "--model user:knee-xray-oa" in note for note in scan.notes)
    assert any(f"{user / 'shouting'} is not used" in note for note in scan.notes)
    assert find_pack(KNEE).path == bundled / KNEE
    assert find_pack(KNEE.upper()).path == bundled / KNEE
    assert find_pack(modality="CR", body_part="KNEE").path == bundled / KNEE
    explicit = find_pack(f"user:{KNEE}")
    assert explicit.path == user / "knee-update" and explicit.card.threshold() == ("balanced", 0.05)
    assert explicit.model_info().origin == "user-installed, unsigned"

    engines = EngineCache()
    assert engines.find(KNEE).path == bundled / KNEE
    assert engines.find(modality="DX", body_part="KNEE").path == bundled / KNEE
    assert engines.find(f"USER:{KNEE}").path == user / "knee-update"
    with pytest.raises(ModelNotFoundError, match="no user-installed model pack with id 'user:hip'"):
        engines.find("user:hip")

    document = models_json(capsys)
    by_id = {p["selection_id"]: p for p in document["packs"]}
    assert by_id[KNEE]["in_use"] and by_id[KNEE]["origin"] == "bundled"
    assert not by_id[f"user:{KNEE}"]["in_use"] and by_id[f"user:{KNEE}"]["version"] == "99.0"
    assert by_id[f"user:{KNEE}"]["origin_label"] == "user-installed, unsigned"
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(f"user:{KNEE} "))
    assert "user-installed, unsigned" in line and f"only with --model user:{KNEE}" in line


def test_a_unique_user_pack_is_usable_and_marked(installed_pack, capsys):
    scan = scan_packs()
    tiny = next(p for p in scan.packs if p.card.id == "tiny-test-pack")
    assert tiny.origin == "user" and tiny.origin_label == "user-installed, unsigned"
    assert find_pack("user:tiny-test-pack").path == installed_pack
    listed = {p["id"]: p for p in models_json(capsys)["packs"]}
    assert listed["tiny-test-pack"]["origin_label"] == "user-installed, unsigned" and listed["tiny-test-pack"]["in_use"]
    assert listed[KNEE]["origin_label"] == "bundled"


# ------------------------------------------------------------------------------------------------------ signatures
def test_a_signed_user_pack_verifies_and_tampering_is_caught(installed_pack, signing_key, tiny_pack, capsys):
    key, fingerprint = signing_key
    assert cli.main(["sign-pack", str(installed_pack), "--key", str(key)]) == 0
    assert f"signed (key {fingerprint})" in capsys.readouterr().out
    pack = load_pack(installed_pack, verify_hash=True)
    assert pack.signer == fingerprint and pack.model_info().origin == f"user-installed, signed (key {fingerprint})"
    signature = (installed_pack / "card.sig").read_bytes()

    # the card edited after signing (a threshold)
    card_bytes = (installed_pack / "card.json").read_bytes()
    edit_card(installed_pack, operating_points={"balanced": {"threshold": 0.01}, "default": "balanced"})
    with pytest.raises(PackSignatureError, match="does not match card.json") as caught:
        load_pack(installed_pack, verify_hash=False)
    assert str(installed_pack) in str(caught.value)
    scan = scan_packs()
    assert "tiny-test-pack" not in ids(scan.packs) and "card.sig does not match" in scan.refused[0].reason
    (installed_pack / "card.json").write_bytes(card_bytes)
    assert load_pack(installed_pack).signer == fingerprint

    # the model swapped: the signed card still names the genuine hash
    original = (installed_pack / "model.keras").read_bytes()
    data = bytearray(original)
    data[-100] ^= 0x01
    (installed_pack / "model.keras").write_bytes(bytes(data))
    with pytest.raises(ModelHashMismatchError):
        load_pack(installed_pack, verify_hash=True)
    assert "tiny-test-pack" not in ids(scan_packs([installed_pack.parent], verify_hash=True).packs)
    (installed_pack / "model.keras").write_bytes(original)

    # the signature damaged, or not a signature
    raw = json.loads(signature)
    raw["signature"] = raw["signature"][:-4] + ("AAA=" if not raw["signature"].endswith("AAA=") else "BBB=")
    (installed_pack / "card.sig").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(PackSignatureError, match="does not match"):
        load_pack(installed_pack, verify_hash=False)
    (installed_pack / "card.sig").write_text("garbage", encoding="utf-8")
    with pytest.raises(PackSignatureError, match="not a readable signature"):
        load_pack(installed_pack, verify_hash=False)
    (installed_pack / "card.sig").write_bytes(signature)
    assert load_pack(installed_pack).signer == fingerprint


def test_a_signature_from_another_key_is_refused(installed_pack, signing_key, tmp_path, capsys):
    other = tmp_path / "other.pem"
    other_fingerprint, _public = trust.generate_key(other)  # not trusted
    assert cli.main(["sign-pack", str(installed_pack), "--key", str(other)]) == 0
    assert f"key {other_fingerprint}, which this asdesk does not trust" in capsys.readouterr().err
    with pytest.raises(PackSignatureError, match=f"made with key {other_fingerprint}, which this asdesk does not"):
        load_pack(installed_pack, verify_hash=False)
    # the untrusted key claiming to be the trusted one: the signature does not verify
    raw = json.loads((installed_pack / "card.sig").read_text(encoding="utf-8"))
    raw["key"] = signing_key[1]
    (installed_pack / "card.sig").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(PackSignatureError, match="does not match card.json"):
        load_pack(installed_pack, verify_hash=False)
    document = models_json(capsys)
    assert "tiny-test-pack" not in [p["id"] for p in document["packs"]]
    assert document["refused"][0]["id"] == "tiny-test-pack" and not document["refused"][0]["usable"]


def test_a_genuine_signature_does_not_cover_a_swapped_user_pack(install, signing_key, tiny_pack):
    _bundled, user = install
    key, fingerprint = signing_key
    genuine = user / "spine-pack"
    shutil.copytree(tiny_pack.path, genuine)
    edit_card(genuine, id="spine-pack")
    trust.sign_pack(genuine, key)
    assert load_pack(genuine).signer == fingerprint
    edit_card(genuine, sha256="f" * 64)  # a tamperer points the signed card at another model
    with pytest.raises(PackSignatureError):
        load_pack(genuine, verify_hash=False)


def test_unsigned_user_packs_can_be_refused_by_setting(installed_pack, monkeypatch):
    monkeypatch.setenv(trust.REQUIRE_SIGNED_ENV, "1")
    with pytest.raises(PackVerificationError, match="not signed .*ASDESK_REQUIRE_SIGNED_PACKS"):
        load_pack(installed_pack, verify_hash=False)
    assert "tiny-test-pack" not in [p.card.id for p in scan_packs().packs]


def test_signing_refuses_an_inconsistent_pack_and_a_bad_key(installed_pack, signing_key, tmp_path):
    (installed_pack / "model.keras").write_bytes(b"not the model")
    with pytest.raises(ModelHashMismatchError):
        trust.sign_pack(installed_pack, signing_key[0])
    assert not (installed_pack / "card.sig").exists()
    (tmp_path / "bad.pem").write_text("nope", encoding="utf-8")
    with pytest.raises(CardError, match="not an unencrypted PEM private key"):
        trust.sign_pack(installed_pack, tmp_path / "bad.pem")
    with pytest.raises(FileExistsError):
        trust.generate_key(signing_key[0])


# ------------------------------------------------------------------------------------------- every listed file
def test_every_file_the_card_lists_is_verified(installed_pack):
    gate = installed_pack / "content_gate.npz"
    gate.write_bytes(b"gate statistics")
    edit_card(installed_pack, content_gate={"file": "content_gate.npz", "sha256": sha256_file(gate),
                                            "threshold": 3.0, "feature_layer": "head_pool"})
    pack = load_pack(installed_pack, verify_hash=True)
    assert pack.files() == {"model.keras": pack.card.sha256, "content_gate.npz": sha256_file(gate)}
    gate.write_bytes(b"other statistics")
    with pytest.raises(ModelHashMismatchError, match="content_gate.npz has SHA-256"):
        load_pack(installed_pack, verify_hash=True)
    gate.unlink()
    with pytest.raises(CardError, match="no content_gate.npz"):
        load_pack(installed_pack, verify_hash=False)
    edit_card(installed_pack, content_gate={"file": "../outside.npz", "sha256": "0" * 64, "threshold": 3.0,
                                            "feature_layer": "head_pool"})
    with pytest.raises(CardError, match="inside it"):
        load_pack(installed_pack, verify_hash=False)


def test_bundled_pins_cover_every_listed_file(install, monkeypatch):
    bundled, _user = install
    gate = bundled / KNEE / "content_gate.npz"
    gate.write_bytes(b"gate")
    edit_card(bundled / KNEE, content_gate={"file": "content_gate.npz", "sha256": sha256_file(gate),
                                            "threshold": 3.0, "feature_layer": "head_pool"})
    monkeypatch.setitem(pin_module.BUNDLED_PINS, KNEE, trust.compute_pins(bundled / KNEE))
    assert set(pin_module.BUNDLED_PINS[KNEE]) == {"card.json", "model.keras", "content_gate.npz", "model.onnx",
                                                  "onnx_head.npz"}
    assert load_pack(bundled / KNEE, verify_hash=True).origin == "bundled"
    gate.write_bytes(b"other")
    with pytest.raises(ModelHashMismatchError, match="content_gate.npz"):
        load_pack(bundled / KNEE, verify_hash=True)


# --------------------------------------------------------------------------------------------------------- keys
def test_the_shipped_public_key_is_valid_and_no_private_key_is_in_the_repository():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    assert trust.TRUSTED_KEYS
    for fingerprint, public_hex in trust.TRUSTED_KEYS.items():
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        assert trust.key_fingerprint(bytes.fromhex(public_hex)) == fingerprint
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=60)
    files = [REPO / name for name in listed.stdout.decode().split("\0") if name] if listed.returncode == 0 else [
        p for p in REPO.rglob("*") if ".git" not in p.parts]
    assert files
    marker = b"PRIVATE" + b" KEY-----"  # not spelt out, so that this file does not match
    for path in files:
        if path.is_file() and path.stat().st_size < 2_000_000:
            assert marker not in path.read_bytes(), f"{path} holds a private key"


def test_the_installer_bundles_the_pins_and_keys():
    spec = (REPO / "installer" / "asdesk.spec").read_text(encoding="utf-8")
    assert '"asdesk.inference.pins"' in spec and '"asdesk.inference.trust"' in spec
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"cryptography>=' in pyproject


def test_results_name_the_pack_that_made_them_and_its_origin(tiny_pack, tmp_path, monkeypatch, capsys):
    """`asdesk analyze`: the bundled pack by default, the user copy only as user:<id>, each marked by origin."""
    import asdesk.tasks.engines

    monkeypatch.setattr(asdesk.tasks.engines, "_DEFAULT", None)  # a cache of its own, dropped afterwards
    bundled = tmp_path / "install" / "models"
    shutil.copytree(tiny_pack.path, bundled / "tiny-test-pack")
    monkeypatch.setattr(paths, "bundled_models_dir", lambda: bundled)
    monkeypatch.setitem(pin_module.BUNDLED_PINS, "tiny-test-pack", trust.compute_pins(bundled / "tiny-test-pack"))
    copy = paths.user_models_dir() / "tiny-copy"
    shutil.copytree(tiny_pack.path, copy)
    card = json.loads((copy / "card.json").read_text(encoding="utf-8"))
    card["version"] = "7.0"
    card["operating_points"]["balanced"]["threshold"] = 0.01
    (copy / "card.json").write_text(json.dumps(card), encoding="utf-8")
    sample = next(p for p in sorted((REPO / "resources" / "samples").iterdir()) if p.suffix == ".png")

    def analyse(*model: str) -> dict:
        assert cli.main(["analyze", str(sample), *model, "--json", "-q", "--no-gradcam"]) == 0
        return json.loads(capsys.readouterr().out.splitlines()[0])

    default = analyse()
    assert (default["model"]["version"], default["model"]["origin"]) == ("0.0.1", "bundled")
    assert default["images"][0]["threshold"] == 0.5
    assert analyse("--model", "tiny-test-pack")["model"]["origin"] == "bundled"
    explicit = analyse("--model", "user:tiny-test-pack")
    assert (explicit["model"]["version"], explicit["model"]["origin"]) == ("7.0", "user-installed, unsigned")
    assert explicit["images"][0]["threshold"] == 0.01
    assert explicit["images"][0]["probability"] == default["images"][0]["probability"]  # the same model file
