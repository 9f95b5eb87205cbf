"""Command-line arguments of ``asdesk train`` and ``asdesk evaluate`` (used by :mod:`asdesk.cli`)."""

from __future__ import annotations

import argparse

from asdesk.training.model import GRADCAM_LAYERS


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser``."""
    parser.add_argument("data", help="labelled folder <root>/<label>/<images>, or the SIJ STIR NIfTI root "
                                     "(with --task sij-stir)")
    parser.add_argument("--task", choices=("folder", "sij-stir", "sij-oedema"), default="folder",
                        help="folder: labelled image folders; sij-stir: STIR NIfTI + reader inflammation masks, "
                             "slice classifier; sij-oedema: the same data, oedema-map U-Net trained on the readers' "
                             "outlines (leave-one-patient-out, then the pack; asdesk.training.oedema)")
    parser.add_argument("--architecture", choices=sorted(GRADCAM_LAYERS), default="MobileNetV2")
    parser.add_argument("--weights", default="none",
                        help="backbone weights: 'imagenet' (needs internet), a no-top .weights.h5 file, or none")
    parser.add_argument("--positive-labels", help="label folders of the positive class, e.g. 2,3,4")
    parser.add_argument("--negative-labels", help="label folders of the negative class, e.g. 0,1")
    parser.add_argument("--patient-pattern", help=r"regex whose first group in the file name is the patient id, "
                                                  r"e.g. '^(\d+)'")
    parser.add_argument("--patient-csv", help="CSV with columns file, patient_id")
    parser.add_argument("--min-readers", type=int, default=2, help="sij-stir: readers that must mark a slice")
    parser.add_argument("--split", choices=("holdout", "lopo", "group-kfold", "repeated-kfold"),
                        help="holdout: 15%% of patients validate (test with --test-data); lopo: "
                             "leave-one-patient-out; group-kfold: --folds folds by patient; repeated-kfold: "
                             "--repeats x --folds stratified folds by patient, out-of-fold probabilities "
                             "averaged over repeats (default: lopo for sij-stir, holdout otherwise)")
    parser.add_argument("--folds", type=int, default=5, help="folds of group-kfold / repeated-kfold")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of repeated-kfold")
    parser.add_argument("--class-weight", choices=("none", "balanced"), default="none",
                        help="balanced: weight each class's loss by N / (2 N_class) (imbalanced data)")
    parser.add_argument("--stn", action="store_true",
                        help="Spatial Transformer (Jaderberg et al. 2015) in front of the backbone, trained "
                             "with the backbone frozen after the head")
    parser.add_argument("--stn-epochs", type=int, default=10, help="max epochs of the Spatial Transformer phase")
    parser.add_argument("--test-data", help="labelled folder of held-out patients for the card's metrics")
    parser.add_argument("--preprocessing", choices=("clahe", "histeq", "none"),
                        help="contrast enhancement (default: clahe for sij-stir, none otherwise)")
    parser.add_argument("--input-size", type=int, default=224, help="model input height/width in pixels")
    parser.add_argument("--epochs", type=int, default=30, help="max epochs of the frozen-backbone phase")
    parser.add_argument("--fine-tune-epochs", type=int, default=0, help="max epochs of fine-tuning (0: none)")
    parser.add_argument("--fine-tune-fraction", type=_fraction, default=0.3,
                        help="fraction (0-1] of the backbone's layers, from the top, unfrozen when fine-tuning "
                             "(1: all; BatchNormalization stays frozen)")
    parser.add_argument("--fine-tune-learning-rate", type=float, default=1e-5,
                        help="Adam learning rate of the fine-tuning phase")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=5,
                        help="early-stopping patience in epochs (validation loss); ReduceLROnPlateau uses half")
    parser.add_argument("--augment-copies", type=int, default=4,
                        help="augmented copies per image for the frozen-backbone phase")
    parser.add_argument("--horizontal-flip", action="store_true",
                        help="flip augmentation (never for per-side labels)")
    parser.add_argument("--study-top-k", type=int, default=3, help="sij-stir: slices in the study rule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder: the model pack (model.keras, card.json) "
                                                     "plus results.json, predictions and plots")
    parser.add_argument("--pack-id", required=True)
    parser.add_argument("--pack-version", default="1.0.0")
    parser.add_argument("--pack-name")
    parser.add_argument("--task-text", help="what the model answers, for the card")
    parser.add_argument("--positive-name", help="finding shown when positive")
    parser.add_argument("--negative-name", help="finding shown when negative")
    parser.add_argument("--modalities", help="comma-separated DICOM modalities the pack accepts ('' = raster)")
    parser.add_argument("--body-parts", help="comma-separated DICOM body parts the pack accepts")
    parser.add_argument("--dataset-name", help="training data name for the card")
    parser.add_argument("--test-dataset-name", help="test data name for the card")
    parser.add_argument("--provenance", help="training data provenance for the card")
    parser.add_argument("--licence", help="training data licence for the card")
    parser.add_argument("--compare", nargs="*", default=[],
                        help="ARCH,ARCH,... (e.g. ResNet50,DenseNet121,MobileNetV2,VGG16): train each backbone "
                             "under this command's protocol, write comparison.md/.json to --out, and build the "
                             "pack with the best (highest AUC); or results.json files of other candidates, "
                             "recorded in the card's comparison. With a comparison, --weights may be "
                             "ARCH=FILE,ARCH=FILE (backbones not named there start from random weights)")


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to ``parser``."""
    parser.add_argument("data", help="labelled folder <root>/<label>/<images> of patients the model never saw")
    parser.add_argument("--model", required=True, help="model pack id (see asdesk models)")
    parser.add_argument("--out", required=True, help="folder for metrics.json, predictions.csv and plots")
    parser.add_argument("--positive-labels")
    parser.add_argument("--negative-labels")
    parser.add_argument("--patient-pattern")
    parser.add_argument("--patient-csv")
    parser.add_argument("--dataset-name")
    parser.add_argument("--write-card", action="store_true",
                        help="replace the card's performance block with this evaluation")


def _fraction(text: str) -> float:
    """argparse type: a float in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value
