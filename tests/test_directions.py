"""Direction families: prefix property, seeding, and what each construction promises."""

from __future__ import annotations

import pytest
import torch

from hesig.signature.directions import FAMILIES, Directions, balanced_class_pairs, make_directions, parse_mix
from hesig.signature.directions.mix import allocation
from hesig.core.errors import InvalidValueError

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def context(digits_owner):
    model, train = digits_owner
    return {"train_images": train.images, "train_labels": train.labels, "model": model}


def build(family, count, context, seed=0, **extra):
    return make_directions(family, count, SHAPE, seed, **context, **extra)


@pytest.mark.parametrize("family", [f for f, fam in FAMILIES.items() if f != "mix" and fam.nested] + ["mix"])
def test_every_family_is_prefix_consistent_seeded_and_unit_norm(family, context):
    """Every family but those that declare otherwise (``learned``: tests/test_learned_points.py)."""
    extra = {"mix": "centroid:1,random:2"} if family == "mix" else {}
    big, small = build(family, 23, context, **extra), build(family, 7, context, **extra)
    assert torch.allclose(big.vectors[:7], small.vectors, atol=1e-5)
    assert torch.allclose(big.vectors.flatten(1).norm(dim=1), torch.ones(23), atol=1e-5)
    assert build(family, 7, context, **extra).hash == small.hash  # same seed, same set
    if family != "pca":  # pca is deterministic by construction
        assert build(family, 7, context, seed=1, **extra).hash != small.hash


def test_only_the_learned_family_declares_no_prefix_property():
    assert [f for f, fam in FAMILIES.items() if not fam.nested] == ["learned"]


def test_balanced_pairs_use_each_class_once_per_block():
    pairs = balanced_class_pairs(10, torch.Generator().manual_seed(3))
    assert len(pairs) == len(set(pairs)) == 90 and all(a != b for a, b in pairs)
    for start in range(0, 90, 10):
        block = pairs[start:start + 10]
        assert sorted(a for a, _ in block) == list(range(10)) and sorted(b for _, b in block) == list(range(10))


def test_centroid_directions_are_class_mean_differences_then_sub_centroids(context):
    images, labels = context["train_images"], context["train_labels"]
    means = torch.stack([images[labels == c].mean(0) for c in range(10)]).flatten(1)
    dirs = build("centroid", 100, context).vectors.flatten(1)
    diffs = means[None, :, None] - means[None, None, :]  # [1, C, C, d]: μ_a - μ_b
    diffs = (diffs / diffs.norm(dim=-1, keepdim=True).clamp_min(1e-12)).flatten(1, 2)
    best = (dirs[:90] @ diffs[0].T).max(1).values
    assert torch.allclose(best, torch.ones(90), atol=1e-4)  # each of the first 90 is some μ_b - μ_a
    assert (dirs[90:] @ diffs[0].T).max(1).values.lt(1 - 1e-3).all()  # beyond 90: sub-centroid pairs


def test_pca_matches_the_top_principal_components(context):
    flat = context["train_images"].flatten(1).double()
    _, _, v = torch.linalg.svd(flat - flat.mean(0), full_matrices=False)
    dirs = build("pca", 5, context).vectors.flatten(1).double()
    assert torch.allclose((dirs * v[:5]).sum(1).abs(), torch.ones(5, dtype=torch.float64), atol=1e-4)
    with pytest.raises(InvalidValueError, match="at most 64 components"):
        build("pca", 65, context)


def test_pgd_directions_lead_from_class_a_to_class_b(context):
    model, images, labels = context["model"], context["train_images"], context["train_labels"]
    dirs = build("pgd", 10, context, pgd_step=0.05, pgd_steps=400).vectors
    gen = torch.Generator().manual_seed(0)  # the family's own pair order for seed 0
    pairs = balanced_class_pairs(10, gen)
    reached = 0
    for d, (a, b) in zip(dirs, pairs):
        start = images[labels == a].mean(0)
        for eps in torch.linspace(0.05, 20, 400):
            if int(model((start + eps * d)[None]).argmax()) == b:
                reached += 1
                break
    assert reached >= 9


def test_uap_pushes_other_classes_toward_its_target(context):
    model, images, labels = context["model"], context["train_images"], context["train_labels"]
    uaps = build("uap", 10, context, uap_radius=3.0).vectors
    noise = build("random", 10, context).vectors
    with torch.no_grad():
        def target_rate(dirs):
            rates = []
            for t in range(10):
                x = images[labels != t][:200]
                rates.append(float((model(x + 3.0 * dirs[t]).argmax(1) == t).float().mean()))
            return sum(rates) / 10
        assert target_rate(uaps) > 0.5 > target_rate(noise) + 0.2


def test_fgsm_directions_are_sign_vectors(context):
    v = build("fgsm", 12, context).vectors.flatten(1)
    nonzero = v[v != 0].abs()
    assert torch.allclose(nonzero, torch.full_like(nonzero, nonzero[0].item()))


def test_mix_allocation_keeps_weights_in_every_prefix():
    owner = allocation([1.0, 1.0], 50)
    assert owner.count(0) == owner.count(1) == 25
    owner = allocation([1.0, 3.0], 40)
    for k in range(4, 41, 4):
        assert owner[:k].count(0) == k // 4


@pytest.mark.parametrize("spec, fragment", [
    ("random:1,psychic:1", "unknown family 'psychic'"), ("random:1,pca:zero", "must be a number"),
    ("random:1,pca:-1", "must be > 0"), ("random:1", "at least two"), ("random,random", "twice"),
])
def test_bad_mix_specifications(spec, fragment):
    with pytest.raises(InvalidValueError, match=fragment):
        parse_mix(spec)


def test_missing_context_and_bad_counts_are_refused(context):
    with pytest.raises(InvalidValueError, match="needs model"):
        make_directions("pgd", 4, SHAPE, 0, train_images=context["train_images"], train_labels=context["train_labels"])
    with pytest.raises(InvalidValueError, match="needs a mix"):
        make_directions("mix", 4, SHAPE, 0)
    with pytest.raises(InvalidValueError, match="count must be >= 1"):
        make_directions("random", 0, SHAPE, 0)


def test_first_k_directions_keep_the_family_and_change_the_hash(context):
    full = build("centroid", 20, context)
    prefix = full.first(10)
    assert prefix.hash == build("centroid", 10, context).hash != full.hash
    assert isinstance(prefix, Directions) and prefix.params["prefix_of"] == full.hash
    with pytest.raises(InvalidValueError):
        full.first(21)


# -- the study ---------------------------------------------------------------------------------

def test_pareto_front_keeps_only_allocations_that_beat_every_cheaper_one():
    from hesig.jobs.study import pareto_front
    cells = [{"queries_per_fingerprint": q, "ssim": s, "id": i}
             for i, (q, s) in enumerate([(100, 0.5), (50, 0.6), (200, 0.55), (300, 0.7), (300, 0.65), (20, 0.1)])]
    assert [c["id"] for c in pareto_front(cells)] == [5, 1, 3]


def test_fingerprint_prefix_checks_the_directions(context):
    from hesig.signature.fingerprints import Fingerprints
    full = build("random", 6, context)
    fp = Fingerprints(torch.rand(3, 6) + 0.1, torch.zeros(3, 6, dtype=torch.bool), torch.ones(3, 6, dtype=torch.int32),
                      torch.arange(3), {"directions_hash": full.hash})
    part = fp.first_directions(full.first(4))
    assert part.eps.shape == (3, 4) and part.meta["directions_hash"] == full.first(4).hash
    with pytest.raises(InvalidValueError):
        fp.first_directions(build("random", 7, context))
