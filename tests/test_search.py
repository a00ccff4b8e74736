"""The boundary search against models whose minimal flipping ε is known in closed form."""

import math

import pytest
import torch
from torch import nn

from hesig.core.errors import InvalidValueError, QueryBudgetExhausted, ShapeError
from hesig.oracles import PlaintextOracle
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
