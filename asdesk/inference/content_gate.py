"""Content gate: is an image like the images a model was trained on, in the model's own feature space?

The distance is the Mahalanobis distance of an image's pooled features (the output of the layer the card
names, ``head_pool``: global average pooling after the backbone) to the training images' features, under
the probabilistic-PCA covariance ``C = W W^T + sigma^2 I`` (Tipping & Bishop, "Probabilistic principal
component analysis", J. R. Stat. Soc. B 61, 1999). Feature-space Mahalanobis distances detect
out-of-distribution inputs (Lee, Lee, Lee & Shin, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks", NeurIPS 2018). The PPCA covariance keeps the
distance defined when there are fewer training images than feature dimensions.

A second method, :class:`KnnGate`, scores an image by its cosine distance to the k-th nearest training image
in the same feature space (Sun, Ming, Zhu & Li, "Out-of-distribution detection with deep nearest neighbors",
ICML 2022). It makes no Gaussian assumption, so a rare, distinct part of the training distribution (KL 4 knees
in a fine-tuned model's features) is not pushed outside the gate; the card's ``content_gate.method`` says which
method a pack uses.

Fitting lives in :mod:`asdesk.training.gatefit`; this module needs only numpy (TensorFlow/Keras are imported
lazily by :func:`feature_model`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

METHOD = "ppca_mahalanobis"
KNN_METHOD = "knn_cosine"


class _Gate:
    """What both gates share: the threshold's check, the feature check and :meth:`accepts`.

    Subclasses are frozen dataclasses with ``feature_layer`` and ``threshold`` fields, an :attr:`n_features`
    property and a :meth:`distance` method.
    """

    feature_layer: str
    threshold: float

    @property
    def n_features(self) -> int:
        """D, the feature dimension."""
        raise NotImplementedError

    def distance(self, features: ArrayLike) -> NDArray[np.float64]:
        """Distance of each feature vector to the training images', float64 (N,)."""
        raise NotImplementedError

    def _check_threshold(self) -> None:
        if not np.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"content gate threshold must be a finite number >= 0, got {self.threshold}")
        object.__setattr__(self, "threshold", float(self.threshold))

    def _features(self, features: ArrayLike, dtype: type) -> np.ndarray:
        """``features`` as (N, D) of ``dtype``; ValueError when D differs or a value is not finite."""
        x = np.atleast_2d(np.asarray(features, dtype=dtype))
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"content gate expects features (N, {self.n_features}) from layer "
                             f"{self.feature_layer!r}, got {np.asarray(features).shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("content gate: features contain NaN or infinity")
        return x

    def accepts(self, features: ArrayLike) -> NDArray[np.bool_]:
        """Whether each image is in distribution: ``distance <= threshold``, bool (N,)."""
        return self.distance(features) <= self.threshold


@dataclass(frozen=True)
class ContentGate(_Gate):
    """A fitted PPCA-Mahalanobis content gate.

    Attributes
    ----------
    method : str
        ``"ppca_mahalanobis"``.
    feature_layer : str
        Name of the model layer whose output is the feature vector (``"head_pool"``).
    threshold : float
        Distance above which an image is out of distribution (chosen so that a target fraction of validation
        images pass).
    mean : numpy.ndarray
        float64 (D,): mean training feature vector.
    components : numpy.ndarray
        float64 (k, D): orthonormal principal axes (rows).
    explained_variance : numpy.ndarray
        float64 (k,): variance along each axis (the largest eigenvalues of the feature covariance), > 0.
    noise_variance : float
        ``sigma^2`` > 0: the mean variance of the discarded directions.
    """

    method: str
    feature_layer: str
    threshold: float
    mean: NDArray[np.float64]
    components: NDArray[np.float64]
    explained_variance: NDArray[np.float64]
    noise_variance: float

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        components = np.asarray(self.components, dtype=np.float64)
        variance = np.asarray(self.explained_variance, dtype=np.float64)
        if self.method != METHOD:
            raise ValueError(f"content gate method must be {METHOD!r}, got {self.method!r}")
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
            raise ValueError(f"content gate: mean (D,) and components (k, D) disagree: {mean.shape}, "
                             f"{components.shape}")
        if variance.shape != (components.shape[0],):
            raise ValueError(f"content gate: explained_variance must be ({components.shape[0]},), got "
                             f"{variance.shape}")
        if not (np.all(variance > 0) and np.isfinite(self.noise_variance) and self.noise_variance > 0):
            raise ValueError("content gate: variances must be > 0")
        self._check_threshold()
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "components", components)
        object.__setattr__(self, "explained_variance", variance)
        object.__setattr__(self, "noise_variance", float(self.noise_variance))

    @property
    def n_features(self) -> int:
        """D, the feature dimension."""
        return int(self.mean.shape[0])

    @property
    def n_components(self) -> int:
        """k, the number of principal axes."""
        return int(self.components.shape[0])

    @classmethod
    def load(cls, path: str | Path, threshold: float, feature_layer: str) -> ContentGate:
        """Read the arrays of ``content_gate.npz`` (the threshold and layer come from the card).

        Parameters
        ----------
        path : str or Path
            The ``.npz`` written by :meth:`save`.
        threshold : float
            The card's ``content_gate.threshold``.
        feature_layer : str
            The card's ``content_gate.feature_layer``.

        Raises
        ------
        ValueError
            A required array is missing or the arrays are inconsistent.
        OSError
            The file cannot be read.
        """
        with np.load(Path(path), allow_pickle=False) as data:
            try:
                return cls(method=METHOD, feature_layer=str(feature_layer), threshold=float(threshold),
                           mean=data["mean"], components=data["components"],
                           explained_variance=data["explained_variance"],
                           noise_variance=float(data["noise_variance"]))
            except KeyError as error:
                raise ValueError(f"{path}: not a content-gate file (missing {error})") from error

    def save(self, path: str | Path) -> None:
        """Write the arrays to ``path`` (an uncompressed ``.npz``; float32 would change distances slightly,
        so float64 is kept)."""
        with Path(path).open("wb") as handle:
            np.savez(handle, mean=self.mean, components=self.components,
                     explained_variance=self.explained_variance,
                     noise_variance=np.float64(self.noise_variance))

    def distance(self, features: ArrayLike) -> NDArray[np.float64]:
        """PPCA Mahalanobis distance of each feature vector to the training distribution.

        ``d^2 = sum_i z_i^2 / lambda_i + (||x - mu||^2 - sum_i z_i^2) / sigma^2`` with ``z = U^T (x - mu)``,
        which equals ``(x - mu)^T (W W^T + sigma^2 I)^{-1} (x - mu)`` for the PPCA maximum-likelihood ``W``
        (Tipping & Bishop 1999).

        Parameters
        ----------
        features : array_like
            float (N, D) pooled features (a single (D,) vector is treated as N = 1).

        Returns
        -------
        numpy.ndarray
            float64 (N,) distances, >= 0 (dimensionless: in standard deviations).

        Raises
        ------
        ValueError
            The feature dimension is not D, or a value is not finite.
        """
        centred = self._features(features, np.float64) - self.mean
        z = centred @ self.components.T
        projected = np.sum(z * z, axis=1)
        residual = np.maximum(np.sum(centred * centred, axis=1) - projected, 0.0)
        squared = np.sum(z * z / self.explained_variance, axis=1) + residual / self.noise_variance
        return np.sqrt(np.maximum(squared, 0.0))


@dataclass(frozen=True)
class KnnGate(_Gate):
    """A k-nearest-neighbour content gate on L2-normalised features (Sun et al., ICML 2022).

    The distance of an image is ``1 - s_k``, where ``s_k`` is the k-th largest cosine similarity between its
    feature vector and the training images' feature vectors: 0 for an image among its k nearest training
    neighbours' identical twins, up to 2.

    Attributes
    ----------
    method : str
        ``"knn_cosine"``.
    feature_layer : str
        Name of the model layer whose output is the feature vector (``"head_pool"``).
    threshold : float
        Distance above which an image is out of distribution.
    reference : numpy.ndarray
        float32 (M, D): the training images' feature vectors, each scaled to unit length.
    k : int
        Which neighbour (1 <= k <= M).
    """

    method: str
    feature_layer: str
    threshold: float
    reference: NDArray[np.float32]
    k: int

    def __post_init__(self) -> None:
        reference = np.asarray(self.reference, dtype=np.float32)
        if self.method != KNN_METHOD:
            raise ValueError(f"k-NN content gate method must be {KNN_METHOD!r}, got {self.method!r}")
        if reference.ndim != 2 or reference.shape[0] < 1 or not np.all(np.isfinite(reference)):
            raise ValueError(f"k-NN content gate: reference must be finite (M, D), got {reference.shape}")
        if not 1 <= int(self.k) <= reference.shape[0]:
            raise ValueError(f"k-NN content gate: k must be in 1..{reference.shape[0]}, got {self.k}")
        self._check_threshold()
        object.__setattr__(self, "reference", reference)
        object.__setattr__(self, "k", int(self.k))

    @property
    def n_features(self) -> int:
        """D, the feature dimension."""
        return int(self.reference.shape[1])

    @property
    def n_components(self) -> int:
        """The number of reference images M (the PPCA gate's place for its size)."""
        return int(self.reference.shape[0])

    @staticmethod
    def normalised(features: ArrayLike) -> NDArray[np.float32]:
        """float32 (N, D) rows scaled to unit length (a zero row stays zero)."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float32))
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0).astype(np.float32)

    @classmethod
    def fit(cls, features: ArrayLike, k: int, threshold: float, feature_layer: str) -> KnnGate:
        """A gate whose reference set is ``features`` (N, D) of the training images."""
        return cls(KNN_METHOD, str(feature_layer), float(threshold), cls.normalised(features), int(k))

    @classmethod
    def load(cls, path: str | Path, threshold: float, feature_layer: str) -> KnnGate:
        """Read ``reference`` and ``k`` from the ``.npz`` written by :meth:`save`.

        Raises
        ------
        ValueError
            A required array is missing or invalid.
        OSError
            The file cannot be read.
        """
        with np.load(Path(path), allow_pickle=False) as data:
            try:
                return cls(KNN_METHOD, str(feature_layer), float(threshold), data["reference"], int(data["k"]))
            except KeyError as error:
                raise ValueError(f"{path}: not a k-NN content-gate file (missing {error})") from error

    def save(self, path: str | Path) -> None:
        """Write ``reference`` (float32) and ``k`` to an uncompressed ``.npz``."""
        with Path(path).open("wb") as handle:
            np.savez(handle, reference=self.reference, k=np.int64(self.k))

    def distance(self, features: ArrayLike) -> NDArray[np.float64]:
        """``1 - s_k`` of each feature vector: float64 (N,) in [0, 2].

        Raises
        ------
        ValueError
            The feature dimension is not D, or a value is not finite.
        """
        similarity = self.normalised(self._features(features, np.float32)) @ self.reference.T
        kth = np.partition(similarity, similarity.shape[1] - self.k, axis=1)[:, similarity.shape[1] - self.k]
        return np.clip(1.0 - kth.astype(np.float64), 0.0, 2.0)


def load_pack_gate(pack_dir: str | Path, block: Mapping[str, Any]) -> ContentGate | KnnGate:
    """The gate a card's ``content_gate`` block describes, after checking the file's SHA-256.

    Parameters
    ----------
    pack_dir : str or Path
        The pack folder.
    block : mapping
        ``card["content_gate"]`` (``file``, ``sha256``, ``threshold``, ``feature_layer``).

    Raises
    ------
    ValueError
        The file's SHA-256 differs from the card's, or the file is not a gate.
    OSError
        The file cannot be read.
    """
    path = Path(pack_dir) / str(block["file"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if block.get("sha256") and digest != str(block["sha256"]).lower():
        raise ValueError(f"{path}: SHA-256 {digest[:12]} differs from the card's {str(block['sha256'])[:12]}")
    gate_class = KnnGate if str(block.get("method", METHOD)) == KNN_METHOD else ContentGate
    return gate_class.load(path, float(block["threshold"]), str(block["feature_layer"]))


def feature_model(model: Any, layer_name: str) -> Any:  # noqa: ANN401
    """A model with two outputs: the named layer's features and the model's own output.

    Parameters
    ----------
    model : keras.Model
        The pack's classifier.
    layer_name : str
        e.g. ``"head_pool"``: (N, D) pooled features.

    Returns
    -------
    keras.Model
        ``keras.Model(model.inputs, [layer output, model.output])`` (a single input is passed as a tensor);
        call it with ``training=False`` on (N, h, w, 3) float32 tensors.

    Raises
    ------
    ValueError
        The model has no layer of that name.
    """
    import keras

    try:
        layer = model.get_layer(layer_name)
    except ValueError as error:
        raise ValueError(f"model {model.name!r} has no layer {layer_name!r} for the content gate") from error
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # a single tensor: no structure warning
    return keras.Model(inputs, [layer.output, model.output])
