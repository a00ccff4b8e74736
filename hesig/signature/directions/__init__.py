"""Perturbation direction families N_i (Moran & Juvekar, section 4) and their registry.

Families: ``random`` (Gaussian), ``rademacher`` (±1), ``centroid`` (class-centroid differences),
``pca`` (principal components), ``fgsm`` / ``pgd`` / ``uap`` (adversarial, from the model),
``mix`` (weighted interleaving of the others) and ``learned`` (query points, direction and ε,
trained by the model owner; a set with knots). See each module for the construction.
"""

from .base import (FAMILIES, Directions, Family, QueryPoints, balanced_class_pairs, class_sample_order,
                   make_directions, register_family, unit_l2)
from . import generic, statistics, adversarial, mix, learned  # noqa: F401  (register the families)
from .mix import parse_mix, required_context

__all__ = ["FAMILIES", "Directions", "Family", "QueryPoints", "balanced_class_pairs", "class_sample_order", "make_directions",
           "parse_mix", "register_family", "required_context", "unit_l2"]
