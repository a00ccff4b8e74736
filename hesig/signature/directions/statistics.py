"""Direction families from the attacker's training-set statistics: centroid differences and PCA.

Both use only data the model owner already has (the training set of M); no victim is involved.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from ...core.errors import InvalidValueError
from .base import balanced_class_pairs, register_family

DATA = ("train_images", "train_labels")


def _sub_centroids(images: torch.Tensor, labels: torch.Tensor, num_classes: int, m: int, seed: int) -> torch.Tensor:
    """[C, m, d] float64: k-means (m clusters, seeded) centroids of each class; m = 1 is the class mean."""
    flat = images.flatten(1).double()
    out = []
    for c in range(num_classes):
        members = flat[labels == c]
        if members.shape[0] < m:
            raise InvalidValueError(f"class {c} has {members.shape[0]} training images, fewer than {m} sub-centroids")
        if m == 1:
            out.append(members.mean(0, keepdim=True))
        else:
            from sklearn.cluster import KMeans  # here: importing scikit-learn adds ~80 MB to every process

            km = KMeans(n_clusters=m, n_init=3, random_state=seed).fit(members.numpy())
            # Sort sub-centroids by cluster size so their numbering does not depend on k-means' labels.
            sizes = torch.bincount(torch.from_numpy(km.labels_).long(), minlength=m)
            centres = torch.from_numpy(km.cluster_centers_)[torch.argsort(sizes, descending=True, stable=True)]
            out.append(centres)
    return torch.stack(out)


@register_family("centroid", needs=DATA)
def centroid_differences(count: int, shape: tuple[int, ...], gen: torch.Generator, *, train_images: torch.Tensor,
                         train_labels: torch.Tensor, seed: int = 0, **_: Any) -> torch.Tensor:
    """Class-centroid differences μ_b - μ_a (toward class b, away from a), unit L2 norm.

    Natural size C(C-1) = 90 ordered pairs for 10 classes, in balanced blocks of C (see
    :func:`balanced_class_pairs`), so 10, 50 or any count <= 90 is a class-balanced prefix.
    Beyond 90 the sequence continues with level m = 2, 3, ...: each class is split into m k-means
    sub-centroids and the differences of sub-centroids of different classes follow, again in
    balanced blocks ((C m)(C-1) m more directions per level; 360 at m = 2).
    """
    labels = train_labels.long()
    num_classes = int(labels.max()) + 1
    vectors: list[torch.Tensor] = []
    level = 1
    while len(vectors) < count:
        cents = _sub_centroids(train_images, labels, num_classes, level, seed)
        subs = list(itertools.product(range(level), range(level)))
        for k in torch.randperm(len(subs), generator=gen).tolist():
            i, j = subs[k]
            for a, b in balanced_class_pairs(num_classes, gen):
                vectors.append(cents[b, j] - cents[a, i])
        level += 1
    return torch.stack(vectors[:count]).float().view(count, *shape)


@register_family("pca", needs=("train_images",))
def principal_components(count: int, shape: tuple[int, ...], gen: torch.Generator, *, train_images: torch.Tensor,
                         **_: Any) -> torch.Tensor:
    """The top principal components of the training images, by decreasing variance.

    Eigenvectors of the float64 pixel covariance. Deterministic (the seed is unused); the sign of
    each component is fixed so that its largest-magnitude pixel is positive. At most d (the
    number of pixels) components exist; a larger count is refused.
    """
    flat = train_images.flatten(1).double()
    d = flat.shape[1]
    if count > d:
        raise InvalidValueError(f"pca has at most {d} components (one per pixel), asked for {count}")
    centred = flat - flat.mean(0)
    cov = centred.T @ centred / max(1, flat.shape[0] - 1)
    _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
    comps = vecs[:, torch.arange(d - 1, d - 1 - count, -1)].T  # [count, d], decreasing variance
    pivot = comps.abs().argmax(1)
    signs = torch.sign(comps[torch.arange(count), pivot])
    return (comps * signs[:, None]).float().view(count, *shape)
