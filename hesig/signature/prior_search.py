"""Prior-guided boundary search: bisection in the owner's quantile space (issue 24).

The plain search (:mod:`hesig.signature.search`) asks its first queries where the answer is
nearly certain: most pairs flip at ε_max, and halving (0, ε_max] spends queries far from where a
given direction's ε lies. The model owner knows better: it can fingerprint its own data at full
precision (a *prior*), so for every direction i it knows the distribution F_i of ε over inputs
like the victim's. This search asks each pair's queries at that distribution's quantiles, so
every answer is close to a fair coin -- about one bit per query:

    query j of pair (r, i):  ε = q_i(l_j / 2^m),   l_1 = 2^(m-1),   l_{j+1} = l_j ∓ 2^(m-1-j)

(q_i: the prior's quantile function of direction i, with censored prior pairs at +inf and every
knot capped at the prior's ε_max; ∓: down after a flip, up after none). After m queries -- exactly
m for every pair -- the pair's ε lies between two adjacent quantile knots:

* ``eps`` = the knot of the last flip (a point known to flip, as in the plain search),
  ``eps_lo`` = the knot of the last non-flip below it (0 if none), so ε_true in (eps_lo, eps];
* a pair that never flipped (up to the top knot q_i(1 - 2^-m)) is **censored**: ``eps`` = +inf,
  ``eps_lo`` = the top knot. Its range is the top knot, not ε_max: where that knot is ε_max (the
  prior's censored fraction exceeds 2^-m) this is the plain search's censoring exactly.

Like the plain search's refinement this is bisection: the final bracket holds a crossing (a
non-flip at its low end, a flip at its high end), but there is no coarse pass, so a ray that
flips, recovers and flips again may be bracketed at a later crossing than the first. The knots
come from the owner's data only (:meth:`PriorGuidedSearch.from_prior`): the victims' inputs
are never read. The decoder sees ``eps`` as from any search (a knot value, one of 2^m per
direction), so a decoder must be trained on fingerprints of this same search (same prior, same m).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ..core.defaults import EPS_MAX_LIMIT, MAX_PRIOR_STEPS
from ..core.errors import InvalidValueError, ShapeError
from ..core.io import tensor_hash
from ..oracles.base import Oracle
from .fingerprints import Fingerprints
from .search import SearchResult, ask_pairs, checked_rows, in_row_groups


class PriorGuidedSearch:
    """Quantile bisection: m queries per (row, direction) pair at the prior's quantiles.

    knots: float [k, 2^m - 1], non-decreasing along each row, in (0, eps_max]: direction i's
    quantiles at levels 1/2^m ... (2^m - 1)/2^m. eps_max: the prior's search range (L2 units),
    recorded for the decoder's censored code. prior: provenance recorded in ``params()`` (the
    prior file's dataset, split, rows and hashes). Validated at construction.
    """

    kind = "prior"

    def __init__(self, knots: torch.Tensor, eps_max: float, prior: dict[str, Any] | None = None):
        if not (isinstance(eps_max, (int, float)) and math.isfinite(eps_max) and 0 < eps_max <= EPS_MAX_LIMIT):
            raise InvalidValueError(f"eps_max must be in (0, {EPS_MAX_LIMIT:g}], got {eps_max}")
        if not isinstance(knots, torch.Tensor) or knots.ndim != 2 or knots.shape[0] < 1:
            raise ShapeError("prior knots must be a tensor [directions, 2^m - 1]")
        width = knots.shape[1]
        steps = int(round(math.log2(width + 1))) if width > 0 else 0
        if steps < 1 or 2 ** steps - 1 != width or steps > MAX_PRIOR_STEPS:
            raise InvalidValueError(f"prior knots need 2^m - 1 columns for m in 1..{MAX_PRIOR_STEPS}, got {width}")
        knots = knots.to(torch.float64)
        if not torch.isfinite(knots).all() or (knots <= 0).any() or (knots > eps_max * (1 + 1e-9)).any():
            raise InvalidValueError(f"prior knots must be finite and in (0, eps_max = {eps_max:g}]")
        if (knots[:, 1:] < knots[:, :-1]).any():
            raise InvalidValueError("prior knots must be non-decreasing along each direction")
        self.knots = knots.contiguous()
        self.steps = steps
        self.eps_max = float(eps_max)
        self.prior = dict(prior or {})

    @classmethod
    def from_prior(cls, prior: Fingerprints, steps: int) -> "PriorGuidedSearch":
        """Knots from the owner's fingerprints [n, k] (censored pairs count as ε = +inf, so a level
        above the censored fraction's complement lands on ε_max). Needs n >= 2^m rows."""
        if int(steps) != steps or not 1 <= steps <= MAX_PRIOR_STEPS:
            raise InvalidValueError(f"prior steps must be an integer in 1..{MAX_PRIOR_STEPS}, got {steps}")
        steps = int(steps)
        n = len(prior)
        if n < 2 ** steps:
            raise InvalidValueError(f"a prior for {steps} queries per pair needs at least {2 ** steps} rows, "
                                    f"the prior has {n}")
        eps_max = float(prior.meta["search"]["eps_max"])
        eps = torch.where(prior.censored, torch.full_like(prior.eps, eps_max), prior.eps).double()
        levels = torch.arange(1, 2 ** steps, dtype=torch.float64) / 2 ** steps
        # "higher": every knot is an ε the prior actually measured (or ε_max), never an interpolation.
        knots = torch.quantile(eps, levels, dim=0, interpolation="higher").T.clamp(max=eps_max)
        provenance = {key: prior.meta.get(key) for key in ("dataset", "split", "split_hash", "model_hash",
                                                            "directions_hash", "indices_hash")}
        provenance.update(rows=n, fingerprints_hash=tensor_hash(prior.eps, prior.censored),
                          search=prior.meta.get("search"))
        return cls(knots, eps_max, provenance)

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "eps_max": self.eps_max, "steps": self.steps,
                "knots_hash": tensor_hash(self.knots.float()), "prior": self.prior}

    def run(self, oracle: Oracle, directions: torch.Tensor, rows: torch.Tensor | None = None,
            on_queries: Callable[[int], None] | None = None) -> SearchResult:
        """Search every (row, direction) pair with m quantile probes; the plain search's interface.

        directions: float32 [k, C, H, W]; k must equal the knots' rows. rows: int64 [n] oracle rows.
        """
        if directions.ndim == 4 and directions.shape[0] != self.knots.shape[0]:
            raise ShapeError(f"the prior has knots for {self.knots.shape[0]} directions, the search got {directions.shape[0]}")
        rows = checked_rows(oracle, directions, rows)
        grouped = in_row_groups(self.run, oracle, directions, rows, on_queries)
        if grouped is not None:
            return grouped
        n, k = rows.numel(), directions.shape[0]
        book = torch.device(oracle.device)
        book = book if book.type == "cuda" else torch.device("cpu")
        pairs = n * k
        pair_row = rows.repeat_interleave(k).to(book)
        pair_dir = torch.arange(k, device=book).repeat(n)
        dirs = directions.to(oracle.device, torch.float32)
        # Knot table with sentinels: level 0 -> ε 0 (below every knot), level 2^m -> +inf (censored).
        top = 2 ** self.steps
        table = torch.cat([torch.zeros(k, 1, dtype=torch.float64), self.knots,
                           torch.full((k, 1), math.inf, dtype=torch.float64)], dim=1).to(book)
        lo = torch.zeros(pairs, dtype=torch.long, device=book)        # level of the last non-flip (0: none)
        hi = torch.full((pairs,), top, dtype=torch.long, device=book)  # level of the last flip (2^m: none)
        all_pairs = torch.arange(pairs, device=book)
        for _ in range(self.steps):
            mid = (lo + hi) // 2
            points = table[pair_dir, mid][:, None]
            flips = ask_pairs(oracle, dirs, pair_row, pair_dir, all_pairs, points, on_queries)[:, 0]
            hi = torch.where(flips, mid, hi)
            lo = torch.where(flips, lo, mid)
        eps = table[pair_dir, hi].to(torch.float32).view(n, k).cpu()
        eps_lo = table[pair_dir, lo].to(torch.float32).view(n, k).cpu()
        censored = (hi == top).view(n, k).cpu()
        queries = torch.full((n, k), self.steps, dtype=torch.int32)
        return SearchResult(eps=eps, eps_lo=eps_lo, censored=censored, queries=queries, rounds=self.steps)


__all__ = ["MAX_PRIOR_STEPS", "PriorGuidedSearch"]
