"""The SIJ oedema-map pack (U-Net): DICOM = NIfTI at the model, the map as shown, the lean runtime, the card.

The model trains on NIfTI volumes and clinics send DICOM: the same slice must reach it identically oriented
and scaled from either format. The map is the model's own per-pixel oedema probability, shown as it is.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, requires_shared

from asdesk.core import CardError

pytest.importorskip("onnxruntime", reason="needs onnxruntime (a runtime dependency)")

PACK = REPO / "models" / "sij-mri-stir-inflammation"
STIR = SHARED_DATA / "sij-mri-dicom" / "patient1" / "STIR"


@pytest.fixture(scope="module")
def engine():
    from asdesk.inference import load_pack
    from asdesk.inference.onnx_engine import create_engine

    return create_engine(load_pack(PACK)).load()


def test_the_pack_is_a_segmentation_pack_named_for_its_map(engine):
    card = engine.card
    assert card.explanation == "oedema_map" and card.map_name == "oedema map"
    assert card.model_info().map_name == "oedema map"
    assert engine.runtime == "onnxruntime"


def test_the_tensorflow_engine_refuses_a_segmentation_pack():
    from asdesk.inference import load_pack
    from asdesk.inference.engine import InferenceEngine

    with pytest.raises(CardError, match="lean runtime"):
        InferenceEngine(load_pack(PACK)).load()


@requires_shared("data/sij-mri-dicom")
@pytest.mark.parametrize("flip_rows", [False, True], ids=["as-dicom", "rows-reversed"])
def test_a_slice_from_dicom_and_from_nifti_reaches_the_model_identically(engine, tmp_path, flip_rows):
    """The DICOM study written as NIfTI the way converters do (LPS -> RAS; once with the rows stored reversed):
    the model input, the score and the oedema map are the same whichever file the slice came from."""
    from test_io_nifti import dicom_series_as_nifti

    from asdesk.io import nifti_slices

    path = tmp_path / "stir.nii.gz"
    dicom = dicom_series_as_nifti(path, flip_rows)
    nifti = nifti_slices(path)
    picks = [3, 7, 11]
    from_dicom = engine.infer([dicom[i] for i in picks])
    from_nifti = engine.infer([nifti[i] for i in picks])
    for a, b in zip(from_dicom, from_nifti, strict=True):
        assert a.record.metadata.pixel_spacing_mm == pytest.approx(b.record.metadata.pixel_spacing_mm)
        np.testing.assert_array_equal(a.model_input.tensor, b.model_input.tensor)
        assert a.model_input.geometry == b.model_input.geometry
        assert a.probability == pytest.approx(b.probability, abs=1e-6)
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)
    # and the orientation is the training data's: head at the top, the patient's right on the image's left
    from asdesk.io import nifti_orientation

    assert nifti_orientation(path)[1:] == ("I", "L")
    training = sorted((SHARED_DATA / "sij-mri-spa" / "stir").glob("**/1003_STIR.nii.gz"))[0]
    assert nifti_orientation(training)[2] == "L"


@requires_shared("data/sij-mri-dicom")
def test_the_oedema_map_is_a_probability_on_the_joints_not_the_skin(shared_data):
    """On the real DICOM study (another site; analysed with the reader's override where the gate refuses) the
    map is the model's probability (not stretched to 1 on every slice), named "oedema map", and what it marks
    lies inside the pelvis, not on the skin or in the image border."""
    from asdesk.core import SeriesResult
    from asdesk.tasks import analyze_path

    result = analyze_path(STIR, force=True)
    assert isinstance(result, SeriesResult) and len(result.slices) == 15
    assert all(s.model.map_name == "oedema map" for s in result.slices)
    peaks = [float(s.heatmap.max()) for s in result.slices]
    assert all(0.0 <= p <= 1.0 for p in peaks)
    assert min(peaks) < 0.9  # a Grad-CAM normalised to its maximum would be 1 on every slice
    rows, cols = result.slices[0].record.shape
    spacing = result.slices[0].record.metadata.pixel_spacing_mm
    border = int(round(25.0 / spacing[0]))  # 25 mm: skin and subcutaneous fat at the edge of the field of view
    inner = np.zeros((rows, cols), bool)
    inner[border:rows - border, border:cols - border] = True
    marked = np.stack([s.heatmap >= 0.5 for s in result.slices])
    assert marked.any()
    assert marked[:, inner].sum() / marked.sum() > 0.95


def test_the_card_matches_its_out_of_fold_predictions():
    from sklearn.metrics import roc_auc_score

    from asdesk.inference import load_pack

    card = load_pack(PACK).card.raw
    with (PACK / "evaluation" / "predictions.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["probability"]) for r in rows])
    assert len(rows) == card["performance"]["n_images"] == 198
    assert roc_auc_score(labels, scores) == pytest.approx(card["performance"]["metrics"]["auc"]["value"], abs=1e-4)
    assert {p["patient"] for p in card["performance"]["per_patient"]} == {r["patient"] for r in rows}
    local = card["localisation"]
    assert local["reader_pairwise_dice"]["mean_of_pairs"] is not None
    assert local["oedema_map"]["consensus"]["pointing_game"]["n"] > 0
    comparison = card["comparison"]
    assert comparison["auc_this"] == card["performance"]["metrics"]["auc"]["value"]
    previous = {entry["pack"].split()[1]: entry for entry in comparison["previous_packs"]}
    assert set(previous) == {"1.0.0", "2.0.0"}  # both earlier packs, on the same folds
    for entry in previous.values():
        assert entry["auc_difference"]["difference"] == pytest.approx(comparison["auc_this"] - entry["auc"], abs=2e-4)
    assert card["selection"]["configurations_tried"] >= 1
    assert sum(card["onnx"]["parity"]["decisions_changed"].values()) == 0


def test_each_joints_auc_in_the_card_is_what_its_out_of_fold_scores_give():
    """Left and right are separate evidence: the card's per-joint AUCs come from the joint scores written beside
    it, and (where the data is present) each joint's label is what the readers marked on that side."""
    from sklearn.metrics import roc_auc_score

    from asdesk.inference import load_pack

    card = load_pack(PACK).card.raw
    block = card["performance"]["per_joint"]
    with (PACK / "evaluation" / "joint_predictions.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == block["n_joints"] == 2 * card["performance"]["n_images"]
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["probability"]) for r in rows])
    assert int(labels.sum()) == block["n_positive"]
    assert roc_auc_score(labels, scores) == pytest.approx(block["auc_all_joints"]["value"], abs=1e-4)
    for joint in ("right", "left"):
        mine = np.array([r["joint"] == joint for r in rows])
        assert roc_auc_score(labels[mine], scores[mine]) == pytest.approx(
            block[f"auc_patient_{joint}"]["value"], abs=1e-4)
    # a slice is positive when two readers marked it; a joint when two marked that side: never more joints
    with (PACK / "evaluation" / "predictions.csv").open(encoding="utf-8") as handle:
        slice_label = {r["key"]: int(r["label"]) for r in csv.DictReader(handle)}
    assert all(int(r["label"]) <= slice_label[r["key"]] for r in rows)
    if (SHARED_DATA / "sij-mri-spa").is_dir():
        from asdesk.training.oedema import load_volumes

        expected = {}
        for volume in load_volumes(SHARED_DATA / "sij-mri-spa"):
            half = volume.records[0].pixels.shape[1] // 2
            for index in range(len(volume.records)):
                for joint, part in (("right", np.s_[:, :half]), ("left", np.s_[:, half:])):
                    votes = sum(bool(mask[index][part].any()) for mask in volume.readers.values())
                    expected[(f"{volume.patient}#{index}", joint)] = int(votes >= 2)
        # the labels were taken on the model-input grid; on the source grid at most a mark on the midline differs
        agree = np.mean([expected[(r["key"], r["joint"])] == int(r["label"]) for r in rows])
        assert agree > 0.97, agree


def test_localisation_measures_are_reproducible_from_the_readers_masks():
    """The readers' pairwise Dice in the card is what the masks give (the ceiling the map is compared with)."""
    from asdesk.training.localisation import reader_agreement
    from asdesk.training.oedema import load_volumes

    if not (SHARED_DATA / "sij-mri-spa").is_dir():
        pytest.skip("needs ../shared/data/sij-mri-spa: not present (a user's clone has no shared folder)")
    volumes = load_volumes(SHARED_DATA / "sij-mri-spa")
    names = sorted(volumes[0].readers)
    readers = np.concatenate([np.stack([v.readers[n] for n in names], axis=1) for v in volumes])
    from asdesk.inference import load_pack

    card = load_pack(PACK).card.raw
    assert reader_agreement(readers, names) == card["localisation"]["reader_pairwise_dice"]
