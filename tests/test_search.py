"""The boundary search against models whose minimal flipping ε is known in closed form."""

import math

import pytest
import torch
from torch import nn

from hesig.core.errors import InvalidValueError, QueryBudgetExhausted, ShapeError
from hesig.oracles import PlaintextOracle
from hesig.signature.fingerprints import Fingerprints
from hesig.signature.prior_search import PriorGuidedSearch
from hesig.signature.search import BoundarySearch

SHAPE = (1, 4, 4)


def linear_model(seed=0, classes=5):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, classes))
    return model.eval()


def exact_eps(model, x, n):
    """First crossing of the top-class margin along n for f(x) = Wx + b: min_j (f_c - f_j) / (Δ_j - Δ_c)."""
    lin = model[1]
    W, b = lin.weight.detach().double(), lin.bias.detach().double()
    f = W @ x.double().flatten() + b
    d = W @ n.double().flatten()
    c = int(f.argmax())
    best = math.inf
    for j in range(len(f)):
        if j != c and d[j] > d[c]:
            best = min(best, float((f[c] - f[j]) / (d[j] - d[c])))
    return best


def never_flipping_direction(model, x):
    """n with W n = e_c (c the top class): the top margin only grows, so the label never changes."""
    lin = model[1]
    c = int(model(x[None]).argmax())
    target = torch.zeros(lin.weight.shape[0], dtype=torch.float64)
    target[c] = 1.0
    n = torch.linalg.pinv(lin.weight.detach().double()) @ target
    return (n / n.norm()).float().view(SHAPE)


@pytest.mark.parametrize("points_per_round", [1, 3, "auto"])
def test_linear_classifier_matches_closed_form(points_per_round):
    model = linear_model()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((6, *SHAPE), generator=gen)
    dirs = torch.randn((20, *SHAPE), generator=gen)
    dirs = dirs / dirs.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    eps_max, atol = 6.0, 1e-4
    search = BoundarySearch(eps_max, coarse_points=8, points_per_round=points_per_round, atol=atol, rtol=0)
    oracle = PlaintextOracle(model, x, device="cpu", batch_size=64)
    res = search.run(oracle, dirs)
    checked_flip = checked_censored = 0
    for r in range(len(x)):
        for i in range(len(dirs)):
            true = exact_eps(model, x[r], dirs[i])
            if true <= eps_max - 1e-6:
                assert not res.censored[r, i]
                # ε is a flipping point: true <= ε <= true + tolerance (float32 slack).
                assert true - 1e-5 <= float(res.eps[r, i]) <= true + atol + 1e-5
                assert res.eps_lo[r, i] <= true + 1e-5
                checked_flip += 1
            else:
                assert res.censored[r, i] and math.isinf(float(res.eps[r, i]))
                checked_censored += 1
    assert checked_flip > 50 and checked_censored > 0
    assert res.total_queries == oracle.queries
    assert int(res.queries[res.censored].max()) == 8  # censored pairs cost only the coarse pass


def test_never_flipping_directions_are_censored_not_eps_max():
    model = linear_model(seed=3)
    x = torch.rand((3, *SHAPE), generator=torch.Generator().manual_seed(0))
    search = BoundarySearch(50.0, coarse_points=4, rtol=1e-3)
    for r in range(3):
        n = never_flipping_direction(model, x[r])
        assert math.isinf(exact_eps(model, x[r], n))
        res = search.run(PlaintextOracle(model, x[r:r + 1], device="cpu"), n[None])
        assert bool(res.censored[0, 0]) and math.isinf(float(res.eps[0, 0]))


class Band(nn.Module):
    """Class 1 only while <x, u> lies in (a, b): the label flips at a and flips back at b."""

    def __init__(self, u, a, b):
        super().__init__()
        self.register_buffer("u", u)
        self.a, self.b = a, b

    def forward(self, x):
        s = x.flatten(1) @ self.u.flatten()
        return torch.stack([torch.zeros_like(s), -(s - self.a) * (s - self.b)], dim=1)


def test_first_crossing_is_found_not_any_crossing():
    u = torch.zeros(SHAPE)
    u.view(-1)[0] = 1.0
    model = Band(u, 2.5, 3.7)
    x = torch.zeros((1, *SHAPE))
    res = BoundarySearch(8.0, coarse_points=8, atol=1e-4, rtol=0).run(PlaintextOracle(model, x, device="cpu"), u[None])
    assert abs(float(res.eps[0, 0]) - 2.5) <= 2e-4
    # With one coarse point at ε_max the band is invisible: the pair is censored, not mis-measured.
    res1 = BoundarySearch(8.0, coarse_points=1, atol=1e-4, rtol=0).run(PlaintextOracle(model, x, device="cpu"), u[None])
    assert bool(res1.censored[0, 0])


def test_bisection_query_count_is_logarithmic():
    model = linear_model()
    x = torch.rand((4, *SHAPE), generator=torch.Generator().manual_seed(5))
    dirs = torch.randn((10, *SHAPE), generator=torch.Generator().manual_seed(6))
    dirs = dirs / dirs.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    eps_max, atol, g = 8.0, 8.0 / 2**12, 4
    res = BoundarySearch(eps_max, coarse_points=g, atol=atol, rtol=0).run(PlaintextOracle(model, x, device="cpu"), dirs)
    q = res.queries[~res.censored]
    # G coarse queries + exactly log2(ε_max / (G·atol)) = 10 bisection steps.
    assert (q == g + 10).all()


@pytest.mark.parametrize("points_per_round", [1, 5])
def test_geometric_grid_matches_closed_form_to_relative_tolerance(points_per_round):
    model = linear_model()
    gen = torch.Generator().manual_seed(11)
    x = torch.rand((5, *SHAPE), generator=gen)
    dirs = torch.randn((20, *SHAPE), generator=gen)
    dirs = dirs / dirs.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    eps_max, rtol = 6.0, 1e-3
    search = BoundarySearch(eps_max, coarse_points=6, points_per_round=points_per_round, atol=0, rtol=rtol,
                            grid="geometric", eps_min=1e-3)
    grid = search.coarse_grid()
    ratio = (eps_max / 1e-3) ** (1 / 5)
    assert torch.allclose(grid, 1e-3 * ratio ** torch.arange(6, dtype=torch.float64)) and float(grid[-1]) == eps_max
    res = search.run(PlaintextOracle(model, x, device="cpu", batch_size=64), dirs)
    checked = 0
    for r in range(len(x)):
        for i in range(len(dirs)):
            true = exact_eps(model, x[r], dirs[i])
            if true <= eps_max - 1e-6:
                assert not res.censored[r, i]
                # ε flips and the final bracket is within rtol of it: true <= ε <= true / (1 - rtol).
                assert true - 1e-5 <= float(res.eps[r, i]) <= true / (1 - rtol) + 1e-5
                checked += 1
            else:
                assert res.censored[r, i]
    assert checked > 50


def test_geometric_grid_finishes_in_two_rounds_when_one_refinement_suffices():
    """G = k = 40, ε_max/eps_min = 1e4: the ratio r = 1e4^(1/39) = 1.266 leaves brackets of relative
    width (r - 1)/r = 0.21 < 41·rtol, so one 40-point round ends every pair above eps_min: two
    oracle rounds (two CKKS evaluations) and exactly 80 queries per pair."""
    model = linear_model()
    gen = torch.Generator().manual_seed(12)
    x = torch.rand((4, *SHAPE), generator=gen)
    dirs = torch.randn((25, *SHAPE), generator=gen)
    dirs = dirs / dirs.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    eps_max, eps_min = 6.0, 6e-4
    search = BoundarySearch(eps_max, coarse_points=40, points_per_round=40, atol=0, rtol=1e-2, grid="geometric",
                            eps_min=eps_min)
    res = search.run(PlaintextOracle(model, x, device="cpu", batch_size=4096), dirs)
    true = torch.tensor([[exact_eps(model, x[r], dirs[i]) for i in range(len(dirs))] for r in range(len(x))])
    above = (true > eps_min) & (true <= eps_max - 1e-6)
    assert res.rounds == 2 and int(above.sum()) > 50
    assert (res.queries[above] == 80).all() and (res.queries[res.censored] == 40).all()
    assert ((res.eps[above] - res.eps_lo[above]) <= 1e-2 * res.eps[above] + 1e-6).all()


def test_budget_is_enforced_before_overshooting():
    model = linear_model()
    x = torch.rand((2, *SHAPE))
    oracle = PlaintextOracle(model, x, device="cpu", batch_size=16, budget=100)
    dirs = torch.randn((10, *SHAPE))
    with pytest.raises(QueryBudgetExhausted, match="budget"):
        BoundarySearch(5.0).run(oracle, dirs)
    assert oracle.queries <= 100


@pytest.mark.parametrize("kwargs", [dict(eps_max=0), dict(eps_max=float("nan")), dict(coarse_points=0),
                                    dict(points_per_round=0), dict(points_per_round="many"),
                                    dict(atol=0, rtol=0), dict(rtol=-1), dict(grid="log"),
                                    dict(eps_min=0.1), dict(grid="geometric", coarse_points=1),
                                    dict(grid="geometric", eps_min=1.0), dict(grid="geometric", eps_min=0.0)])
def test_invalid_parameters_rejected_at_construction(kwargs):
    args = dict(eps_max=1.0)
    args.update(kwargs)
    with pytest.raises(InvalidValueError):
        BoundarySearch(args.pop("eps_max"), **args)


def test_direction_shape_mismatch():
    oracle = PlaintextOracle(linear_model(), torch.rand((1, *SHAPE)), device="cpu")
    with pytest.raises(ShapeError, match="directions have shape"):
        BoundarySearch(1.0).run(oracle, torch.randn(3, 1, 5, 5))


# -- the prior-guided (quantile) search: the same closed-form checks -------------------------------

PRIOR_EPS_MAX = 6.0


def prior_setup(n_prior=64, n_victims=8, k=12, seed=1):
    """A linear model (its label changes once along a ray, so bisection's bracket is exact), unit
    directions, the owner's rows and the victims' rows, disjoint."""
    model = linear_model()
    gen = torch.Generator().manual_seed(seed)
    owner = torch.rand((n_prior, *SHAPE), generator=gen)
    victims = torch.rand((n_victims, *SHAPE), generator=gen)
    dirs = torch.randn((k, *SHAPE), generator=gen)
    dirs = dirs / dirs.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return model, owner, victims, dirs


def prior_fingerprints(model, owner, dirs, eps_max=PRIOR_EPS_MAX):
    res = BoundarySearch(eps_max, coarse_points=8, atol=1e-4, rtol=0).run(PlaintextOracle(model, owner, device="cpu"), dirs)
    meta = {"dataset": "mnist", "split": "train", "model_hash": "m", "directions_hash": "d",
            "search": {"eps_max": eps_max}}
    return Fingerprints(res.eps, res.censored, res.queries, torch.arange(len(owner)), meta)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_bracket_is_the_pair_of_adjacent_knots_around_the_true_eps(steps):
    model, owner, victims, dirs = prior_setup()
    search = PriorGuidedSearch.from_prior(prior_fingerprints(model, owner, dirs), steps)
    res = search.run(PlaintextOracle(model, victims, device="cpu", batch_size=7), dirs)
    table = torch.cat([torch.zeros(len(dirs), 1, dtype=torch.float64), search.knots], 1)
    assert (res.queries == steps).all() and res.rounds == steps  # exactly m queries per pair, closed form
    for r in range(len(victims)):
        for i in range(len(dirs)):
            true = exact_eps(model, victims[r], dirs[i])
            # which knot interval holds ε_true: level l with knot_l < ε <= knot_{l+1}
            level = int((search.knots[i] < true - 1e-6).sum())
            if level == search.knots.shape[1]:  # above the top knot: censored, the top knot tested
                assert res.censored[r, i] and math.isinf(float(res.eps[r, i]))
                assert float(res.eps_lo[r, i]) == pytest.approx(float(search.knots[i, -1]))
            else:
                assert not res.censored[r, i]
                assert float(res.eps[r, i]) == pytest.approx(float(search.knots[i, level]), rel=1e-6)
                assert float(res.eps_lo[r, i]) == pytest.approx(float(table[i, level]), rel=1e-6, abs=1e-9)
                assert float(res.eps_lo[r, i]) <= true + 1e-5 <= float(res.eps[r, i]) + 2e-5


def test_each_query_is_close_to_a_fair_coin_on_the_owners_distribution():
    """On the prior's own rows every final interval gets about n / 2^m pairs: one bit per query."""
    model, owner, _, dirs = prior_setup(n_prior=128, k=40)
    prior = prior_fingerprints(model, owner, dirs, eps_max=1000.0)
    dirs = dirs[~prior.censored.any(0)]  # censored prior pairs tie the top knots at ε_max (tested above)
    assert len(dirs) >= 10
    search = PriorGuidedSearch.from_prior(prior_fingerprints(model, owner, dirs, eps_max=1000.0), 2)
    res = search.run(PlaintextOracle(model, owner, device="cpu"), dirs)
    # the final interval's index: knots strictly below the reported ε (censored: all 3 of them)
    level = (search.knots[None] < res.eps.double()[:, :, None] * (1 - 1e-6)).sum(2)  # [n, k]
    counts = torch.bincount(level.flatten(), minlength=4).double() / level.numel()
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.04), counts


def test_never_flipping_direction_is_censored_at_eps_max():
    model, owner, victims, dirs = prior_setup(k=3)
    dirs = torch.cat([dirs, never_flipping_direction(model, owner[0])[None]])
    # the never-flipping direction of owner[0] flips for few or none of the owner's rows
    prior = prior_fingerprints(model, owner, dirs)
    search = PriorGuidedSearch.from_prior(prior, 3)
    censored_fraction = float(prior.censored[:, -1].float().mean())
    if censored_fraction > 1 / 8:  # the top knot is then ε_max itself: the plain search's censoring
        assert float(search.knots[-1, -1]) == PRIOR_EPS_MAX
    res = search.run(PlaintextOracle(model, owner[:1], device="cpu"), dirs)
    assert res.censored[0, -1] and math.isinf(float(res.eps[0, -1]))


def test_budget_is_enforced():
    model, owner, victims, dirs = prior_setup()
    search = PriorGuidedSearch.from_prior(prior_fingerprints(model, owner, dirs), 3)
    with pytest.raises(QueryBudgetExhausted):
        search.run(PlaintextOracle(model, victims, device="cpu", budget=len(victims) * len(dirs) * 2), dirs)


def test_params_record_the_prior_and_its_knots():
    model, owner, _, dirs = prior_setup()
    search = PriorGuidedSearch.from_prior(prior_fingerprints(model, owner, dirs), 2)
    params = search.params()
    assert params["kind"] == "prior" and params["steps"] == 2 and params["eps_max"] == PRIOR_EPS_MAX
    assert params["prior"]["rows"] == len(owner) and params["prior"]["split"] == "train"
    assert len(params["knots_hash"]) == 16 and len(params["prior"]["fingerprints_hash"]) == 16


@pytest.mark.parametrize("knots, message", [
    (torch.tensor([[1.0, 2.0]]), "2\\^m - 1 columns"),
    (torch.tensor([[1.0, 0.5, 2.0]]), "non-decreasing"),
    (torch.tensor([[0.0, 1.0, 2.0]]), "in \\(0, eps_max"),
    (torch.tensor([[1.0, 2.0, 7.0]]), "in \\(0, eps_max"),
    (torch.tensor([[1.0, math.nan, 2.0]]), "finite"),
    (torch.ones(3), "tensor \\[directions"),
])
def test_invalid_knots_rejected_at_construction(knots, message):
    with pytest.raises((InvalidValueError, ShapeError), match=message):
        PriorGuidedSearch(knots, PRIOR_EPS_MAX)


def test_prior_too_small_or_steps_out_of_range():
    model, owner, _, dirs = prior_setup(n_prior=8)
    prior = prior_fingerprints(model, owner, dirs)
    with pytest.raises(InvalidValueError, match="at least 16 rows"):
        PriorGuidedSearch.from_prior(prior, 4)
    for steps in (0, 13, 1.5):
        with pytest.raises(InvalidValueError, match="prior steps"):
            PriorGuidedSearch.from_prior(prior, steps)


def test_direction_count_must_match_the_knots():
    model, owner, victims, dirs = prior_setup()
    search = PriorGuidedSearch.from_prior(prior_fingerprints(model, owner, dirs), 1)
    with pytest.raises(ShapeError, match="knots for 12 directions"):
        search.run(PlaintextOracle(model, victims, device="cpu"), dirs[:5])


def test_rank_features_give_prior_fingerprints_their_quantile_level():
    """On prior-guided fingerprints (ε one of 2^M knots, or censored) the rank encoding is the
    quantile level: evenly spaced, censored on top; the log encoding spaces levels as the knots lie."""
    from hesig.signature.decoders import FingerprintFeatures
    model, owner, victims, dirs = prior_setup(n_prior=128, k=40)
    prior = prior_fingerprints(model, owner, dirs, eps_max=1000.0)
    dirs = dirs[~prior.censored.any(0)]
    prior = prior_fingerprints(model, owner, dirs, eps_max=1000.0)
    res = PriorGuidedSearch.from_prior(prior, 2).run(PlaintextOracle(model, owner, device="cpu"), dirs)
    feats = FingerprintFeatures.fit(res.eps, res.censored, 1000.0, kind="rank")
    assert feats.kind == "rank" and feats.table.shape == (len(dirs), 128)
    u = feats._encode(res.eps, res.censored)  # [n, k] mid-ranks in (0, 1)
    knots = PriorGuidedSearch.from_prior(prior, 2).knots
    level = (knots[None] < res.eps.double()[:, :, None] * (1 - 1e-6)).sum(2)  # 0..3, censored 3
    for j in range(len(dirs)):
        means = [float(u[level[:, j] == lv, j].mean()) for lv in range(4) if (level[:, j] == lv).any()]
        assert means == sorted(means) and all(0 < m < 1 for m in means)
        assert len(set(round(float(x), 6) for x in u[level[:, j] == 0, j])) <= 1  # one value per level
    z = feats.transform(res.eps, res.censored)
    assert z.shape == (len(owner), 2 * len(dirs)) and torch.isfinite(z).all()
    assert torch.allclose(z[:, :len(dirs)].mean(0), torch.zeros(len(dirs)), atol=1e-4)
    with pytest.raises(InvalidValueError, match="decoder features must be one of log, rank"):
        FingerprintFeatures.fit(res.eps, res.censored, 1000.0, kind="sqrt")


def test_rank_decoder_checkpoint_round_trip_and_tampering(tmp_path):
    from hesig.core.errors import CheckpointError
    from hesig.core.io import load_tensors, save_tensors
    from hesig.signature.decoders import FingerprintDecoder, FingerprintFeatures, train_decoder
    model, owner, victims, dirs = prior_setup(n_prior=64, k=6)
    res = BoundarySearch(PRIOR_EPS_MAX, coarse_points=4, rtol=0.1).run(PlaintextOracle(model, owner, device="cpu"), dirs)
    feats = FingerprintFeatures.fit(res.eps, res.censored, PRIOR_EPS_MAX, kind="rank")
    net, _ = train_decoder(feats.transform(res.eps, res.censored), owner, ngf=4, epochs=1, progress=False)
    meta = {"model_hash": "m", "directions_hash": "d"}
    FingerprintDecoder(net, feats, meta).save(tmp_path / "dec")
    back = FingerprintDecoder.load(tmp_path / "dec")
    assert back.features.kind == "rank" and torch.equal(back.features.table, feats.table)
    fp = Fingerprints(res.eps, res.censored, res.queries, torch.arange(len(owner)), meta)
    assert torch.equal(back.reconstruct(fp), FingerprintDecoder(net.eval(), feats, meta).reconstruct(fp))
    # a table that is not sorted is refused in one line, not silently used
    weights = tmp_path / "dec" / "decoder.safetensors"
    tensors, meta_on_disk = load_tensors(weights, what="decoder checkpoint")
    tensors["features.table"] = tensors["features.table"].flip(1).contiguous()
    save_tensors(weights, tensors, meta_on_disk)
    with pytest.raises(CheckpointError, match="rank table is not a sorted"):
        FingerprintDecoder.load(tmp_path / "dec")


def test_decoder_fully_connected_layers_round_trip_and_hostile_metadata(tmp_path):
    """mlp > 0 adds a lift of Linear/BatchNorm/ReLU layers; the paper's generator (mlp 0) keeps its
    module names (old checkpoints load); a checkpoint claiming absurd layers is refused in one line."""
    from hesig.core.errors import CheckpointError
    from hesig.core.io import load_tensors, save_tensors
    from hesig.models.dcgan import DCGANDecoder
    from hesig.signature.decoders import FingerprintDecoder, FingerprintFeatures, train_decoder
    assert not any(k.startswith("lift.") for k in DCGANDecoder(12, (1, 8, 8), 4).state_dict())
    with pytest.raises(InvalidValueError, match="mlp layers"):
        DCGANDecoder(12, (1, 8, 8), 4, mlp=99)
    model, owner, victims, dirs = prior_setup(n_prior=64, k=6)
    res = BoundarySearch(PRIOR_EPS_MAX, coarse_points=4, rtol=0.1).run(PlaintextOracle(model, owner, device="cpu"), dirs)
    feats = FingerprintFeatures.fit(res.eps, res.censored, PRIOR_EPS_MAX)
    net, _ = train_decoder(feats.transform(res.eps, res.censored), owner, ngf=4, epochs=1, progress=False, mlp=1)
    assert net.mlp == 1 and isinstance(net.lift[0], torch.nn.Linear)
    meta = {"model_hash": "m", "directions_hash": "d"}
    FingerprintDecoder(net, feats, meta).save(tmp_path / "dec")
    fp = Fingerprints(res.eps, res.censored, res.queries, torch.arange(len(owner)), meta)
    back = FingerprintDecoder.load(tmp_path / "dec")
    assert back.network.mlp == 1 and torch.equal(back.reconstruct(fp), FingerprintDecoder(net.eval(), feats, meta).reconstruct(fp))
    weights = tmp_path / "dec" / "decoder.safetensors"
    tensors, meta_on_disk = load_tensors(weights, what="decoder checkpoint")
    for hostile in ({"mlp": 10 ** 9}, {"mlp_width": 10 ** 12}, {"mlp": 0}, {"mlp": "two"}):
        save_tensors(weights, tensors, {**meta_on_disk, **hostile})
        with pytest.raises(CheckpointError, match="incomplete or of another shape"):
            FingerprintDecoder.load(tmp_path / "dec")


def test_decoder_residual_blocks_round_trip_and_hostile_metadata(tmp_path):
    """res > 0 adds residual blocks at full resolution, each the identity plus a learned correction
    (zeroed, a block passes its ReLU'd input through); res 0 keeps the paper's modules, and the output
    convolution keeps its index; a checkpoint with a hostile block count is refused in one line."""
    from hesig.core.errors import CheckpointError
    from hesig.core.io import load_tensors, save_tensors
    from hesig.models.dcgan import DCGANDecoder, ResidualBlock
    from hesig.signature.decoders import FingerprintDecoder, FingerprintFeatures, train_decoder
    plain = DCGANDecoder(12, (1, 8, 8), 4)
    assert not any(k.startswith("refine.") for k in plain.state_dict())
    deeper = DCGANDecoder(12, (1, 8, 8), 4, res=2)
    assert set(plain.state_dict()) < set(deeper.state_dict())   # the paper's names, and the blocks beside them
    assert len(deeper.refine) == 2 and deeper(torch.zeros(3, 12)).shape == (3, 1, 8, 8)
    for bad in (-1, 9, 1.5, "two", True):
        with pytest.raises(InvalidValueError, match="residual blocks"):
            DCGANDecoder(12, (1, 8, 8), 4, res=bad)
    block = ResidualBlock(3).eval()
    torch.nn.init.zeros_(block.body[4].weight)   # the second BatchNorm's scale: the correction vanishes
    h = torch.randn(2, 3, 5, 5)
    assert torch.equal(block(h), h.relu())
    model, owner, victims, dirs = prior_setup(n_prior=64, k=6)
    found = BoundarySearch(PRIOR_EPS_MAX, coarse_points=4, rtol=0.1).run(PlaintextOracle(model, owner, device="cpu"), dirs)
    feats = FingerprintFeatures.fit(found.eps, found.censored, PRIOR_EPS_MAX)
    net, _ = train_decoder(feats.transform(found.eps, found.censored), owner, ngf=4, epochs=1, progress=False, res=1)
    assert net.res == 1
    meta = {"model_hash": "m", "directions_hash": "d"}
    FingerprintDecoder(net, feats, meta).save(tmp_path / "dec")
    fp = Fingerprints(found.eps, found.censored, found.queries, torch.arange(len(owner)), meta)
    back = FingerprintDecoder.load(tmp_path / "dec")
    assert back.network.res == 1 and back.meta["res"] == 1
    assert torch.equal(back.reconstruct(fp), FingerprintDecoder(net.eval(), feats, meta).reconstruct(fp))
    weights = tmp_path / "dec" / "decoder.safetensors"
    tensors, meta_on_disk = load_tensors(weights, what="decoder checkpoint")
    for hostile in ({"res": 10 ** 9}, {"res": 0}, {"res": 2}, {"res": "two"}, {"res": -1}):
        save_tensors(weights, tensors, {**meta_on_disk, **hostile})
        with pytest.raises(CheckpointError, match="incomplete or of another shape"):
            FingerprintDecoder.load(tmp_path / "dec")
