"""Attackers who know the defense: searches that read noisy or budgeted bits (issue 19).

Every attacker is a search with the :class:`~hesig.signature.search.BoundarySearch` interface --
``run(oracle, directions, rows=None, on_queries=None) -> SearchResult`` and ``params()`` -- so
it plugs into ``fingerprint_rows``, the study and the CKKS oracle unchanged. Spec strings
(:func:`parse_attacker`):

* ``standard``: the paper's search (coarse grid, then bisection), unchanged.
* ``vote:R``: every query asked R times (odd), the majority kept. Against a bit flipped with
  probability p, the vote errs with probability sum_{j > R/2} C(R, j) p^j (1-p)^(R-j); R times
  the queries.
* ``bayes:Q`` or ``bayes:Q@T``: probabilistic bisection (Horstein 1963; Waeber, Frazier &
  Henderson 2013): a posterior over where the first flip lies, on ``grid`` bins of (0, ε_max]
  plus one bin for "no flip" (censored); each query is asked at the posterior median and the
  posterior is multiplied by the likelihood of the answer under a bit error rate Q (what the
  attacker believes the defense flips); T queries per pair (default 40).
* ``low-flip:F``: the coarse grid walked upward one point per round (one flip per pair) and
  refinement points at a fraction F of each bracket, so about a fraction F of the queries flip:
  for a client that counts its flips.
* ``budgeted:N``: fits N evaluations per input over the k directions: one query at ε_max, then
  N // k - 1 bisection steps (N < k is refused).
* ``grid:G``: the coarse pass alone, G points per direction in one round: an attacker that plans
  for a client answering one result per input (the default CKKS policy, ``budget:1``): G x k
  queries must fit one result's slots (4,095 at hesig's parameters: G = 40 for 100 directions).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..core.defaults import EPS_MAX, RTOL, COARSE_POINTS
from ..core.errors import InvalidValueError, ShapeError
from ..oracles.base import Oracle, OracleWrapper
from .search import BoundarySearch, SearchResult, ask_pairs

#: Spec grammar, for messages and --help.
ATTACKER_CHOICES = "standard, vote:R, bayes:Q[@T], low-flip:F, budgeted:N, grid:G"
#: Probabilistic bisection defaults: bins of (0, ε_max] and queries per pair.
BAYES_GRID = 256
BAYES_QUERIES = 40


class MajorityVote(OracleWrapper):
    """Asks every query ``repeats`` times (odd) and answers the majority.

    The attacker's counter (``queries``) counts the queries it asked; the inner oracle counts
    ``repeats`` times as many, which is the true cost. ``capacity`` is the inner one's divided by
    ``repeats``, so a call still fills one inner batch (or CKKS result).
    """

    def __init__(self, inner: Oracle, repeats: int, budget: int | None = None):
        if int(repeats) != repeats or repeats < 1 or repeats % 2 == 0:
            raise InvalidValueError(f"a majority vote needs an odd number of repeats >= 1, got {repeats}")
        super().__init__(inner, budget)
        self.repeats = int(repeats)
        self.capacity = max(1, inner.capacity // self.repeats)

    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        r = self.repeats
        bits = self.inner.same_label(perturbations.repeat(r, 1, 1, 1), rows.repeat(r))
        return bits.view(r, -1).sum(0) * 2 > r


class VotingSearch:
    """The standard search over a :class:`MajorityVote` oracle; queries reported are the true ones."""

    def __init__(self, repeats: int, search: BoundarySearch):
        if int(repeats) != repeats or repeats < 1 or repeats % 2 == 0:
            raise InvalidValueError(f"vote:R needs an odd R >= 1, got {repeats}")
        self.repeats, self.search = int(repeats), search
        self.eps_max = search.eps_max

    def params(self) -> dict:
        return {"attacker": f"vote:{self.repeats}", **self.search.params()}

    def run(self, oracle: Oracle, directions: torch.Tensor, rows: torch.Tensor | None = None,
            on_queries: Callable[[int], None] | None = None) -> SearchResult:
        r = self.repeats
        res = self.search.run(MajorityVote(oracle, r), directions, rows,
                              None if on_queries is None else (lambda q: on_queries(q * r)))
        res.queries = res.queries * r
        return res


class NoisyBisection:
    """Probabilistic bisection over (0, ε_max] for every (row, direction) pair; see the module docstring.

    error_rate: Q in [0, 0.5), the attacker's belief of how often a bit is wrong.
    queries: T >= 1 per pair. grid: B >= 2 bins of width ε_max / B (the resolution).
    The result's ε is the right edge of the posterior-median bin (inf where the median is the
    censored bin), eps_lo its left edge; ``queries`` is T for every pair.
    """

    def __init__(self, error_rate: float, queries: int = BAYES_QUERIES, *, eps_max: float = EPS_MAX,
                 grid: int = BAYES_GRID):
        if not (isinstance(error_rate, (int, float)) and 0 <= error_rate < 0.5):
            raise InvalidValueError(f"bayes:Q needs a bit error rate Q in [0, 0.5), got {error_rate}")
        if int(queries) != queries or queries < 1:
            raise InvalidValueError(f"bayes:Q@T needs T >= 1 queries per pair, got {queries}")
        if int(grid) != grid or grid < 2:
            raise InvalidValueError(f"the posterior grid needs >= 2 bins, got {grid}")
        BoundarySearch(eps_max)  # the same eps_max validation as every search
        self.error_rate, self.queries, self.eps_max, self.grid = float(error_rate), int(queries), float(eps_max), int(grid)

    def params(self) -> dict:
        return {"attacker": f"bayes:{self.error_rate:g}@{self.queries}", "eps_max": self.eps_max, "grid": self.grid,
                "queries_per_pair": self.queries}

    def run(self, oracle: Oracle, directions: torch.Tensor, rows: torch.Tensor | None = None,
            on_queries: Callable[[int], None] | None = None) -> SearchResult:
        if directions.ndim != 4 or tuple(directions.shape[1:]) != tuple(oracle.input_shape):
            raise ShapeError(f"directions have shape {list(directions.shape[1:])} but the oracle's inputs are {list(oracle.input_shape)}")
        rows = torch.arange(oracle.num_rows) if rows is None else rows.to(torch.long).cpu()
        n, k, bins = rows.numel(), directions.shape[0], self.grid
        pairs = n * k
        pair_row, pair_dir = rows.repeat_interleave(k), torch.arange(k).repeat(n)
        dirs = directions.to(oracle.device, torch.float32)
        width = self.eps_max / bins
        # Posterior over bins 0..B-1 (first flip in (b·w, (b+1)·w]) and bin B (no flip: censored).
        post = torch.full((pairs, bins + 1), 1.0 / (bins + 1), dtype=torch.float64)
        edges = torch.arange(1, bins + 1, dtype=torch.float64) * width  # right edge of each finite bin
        bin_index = torch.arange(bins + 1)[None, :]
        # Q = 0 would zero a bin for good on one wrong bit; a floor keeps the update recoverable.
        wrong = max(self.error_rate, 1e-6)
        all_pairs = torch.arange(pairs)
        for _ in range(self.queries):
            median = self._median(post).clamp(max=bins - 1)   # query at a finite bin's right edge
            point = edges[median]
            flips = ask_pairs(oracle, dirs, pair_row, pair_dir, all_pairs, point[:, None], on_queries)[:, 0]
            # A flip at x says the first flip is at or below x: bins 0..median gain weight 1-Q, the rest Q.
            agree = (bin_index <= median[:, None]) == flips[:, None]
            post *= torch.where(agree, 1.0 - wrong, wrong)
            post /= post.sum(1, keepdim=True)
        best = self._median(post)
        censored = best == bins
        eps = torch.where(censored, torch.full((pairs,), math.inf, dtype=torch.float64), edges[best.clamp(max=bins - 1)])
        eps_lo = torch.where(censored, torch.full((pairs,), self.eps_max, dtype=torch.float64), best.double() * width)
        return SearchResult(eps=eps.float().view(n, k), eps_lo=eps_lo.float().view(n, k), censored=censored.view(n, k),
                            queries=torch.full((n, k), self.queries, dtype=torch.int32), rounds=self.queries)

    @staticmethod
    def _median(post: torch.Tensor) -> torch.Tensor:
        """int64 [P]: the first bin where the posterior CDF reaches 1/2 (a binary search per row)."""
        cdf = post.cumsum(1)
        half = torch.full((post.shape[0], 1), 0.5, dtype=post.dtype)
        return torch.searchsorted(cdf, half).squeeze(1).clamp(max=post.shape[1] - 1)


def parse_attacker(spec: str | None, *, eps_max: float = EPS_MAX, coarse_points: int = COARSE_POINTS,
                   rtol: float = RTOL, directions: int | None = None):
    """A search from an attacker spec (see the module docstring); None = ``standard``.

    eps_max / coarse_points / rtol: the standard search's settings, which vote and low-flip keep.
    directions: k, needed by ``budgeted:N``.
    """
    spec = "standard" if spec is None else spec
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidValueError(f"attacker must be a non-empty string, got {spec!r}")
    name, _, value = spec.strip().partition(":")
    name = name.strip().lower()
    base = dict(coarse_points=coarse_points, rtol=rtol)
    if name == "standard" and not value:
        return BoundarySearch(eps_max, **base)
    if name == "vote":
        return VotingSearch(_number(value, spec, int), BoundarySearch(eps_max, **base))
    if name == "bayes":
        rate, at, count = value.partition("@")
        return NoisyBisection(_number(rate, spec, float), _number(count, spec, int) if at else BAYES_QUERIES,
                              eps_max=eps_max)
    if name == "low-flip":
        fraction = _number(value, spec, float)
        if not 0 < fraction < 0.5:
            raise InvalidValueError(f"low-flip:F needs a flip fraction F in (0, 0.5), got {fraction}")
        return BoundarySearch(eps_max, **base, split=fraction, ascending=True)
    if name == "budgeted":
        evaluations = _number(value, spec, int)
        if directions is None:
            raise InvalidValueError("budgeted:N needs the number of directions")
        if evaluations < directions:
            raise InvalidValueError(f"budgeted:{evaluations} cannot ask each of {directions} directions once: "
                                    "use fewer directions or a larger N")
        return BoundarySearch(eps_max, coarse_points=1, rtol=rtol, max_steps=evaluations // directions - 1)
    if name == "grid":
        points = _number(value, spec, int)
        if points < 1:
            raise InvalidValueError(f"grid:G needs G >= 1 points per direction, got {points}")
        return BoundarySearch(eps_max, coarse_points=points, rtol=rtol, max_steps=0)
    raise InvalidValueError(f"unknown attacker '{spec}' (choose from {ATTACKER_CHOICES})")


def _number(value: str, spec: str, kind):
    try:
        return kind(value)
    except ValueError:
        raise InvalidValueError(f"attacker '{spec}' needs a{'n integer' if kind is int else ' number'} value") from None


__all__ = ["ATTACKER_CHOICES", "MajorityVote", "NoisyBisection", "VotingSearch", "parse_attacker"]
