"""Batched boundary search: oracle bits -> minimal flipping ε per (row, direction) pair.

For every secret row r and direction N_i the engine finds (Moran & Juvekar, section 4)

    ε_i = min { ε in (0, ε_max] : argmax M(X_r + ε N_i) != argmax M(X_r) }

to a stated tolerance, using only :meth:`Oracle.same_label` bits.

Algorithm, vectorised over all pairs:

1. **Coarse pass.** Query every pair at ``coarse_points`` = G grid points g_1 < ... < g_G = ε_max
   in one batched round: evenly spaced, g_j = ε_max·j/G (``grid="linear"``), or log-spaced from
   ``eps_min``, g_j = eps_min·(ε_max/eps_min)^((j-1)/(G-1)) (``grid="geometric"``: every bracket
   has the same *relative* width, so one k-point refinement round reaches a relative tolerance
   for every ε >= eps_min at once -- a CKKS search in two evaluations instead of three). The
   first flipping grid point brackets the *first* crossing (to grid resolution): the bracket is
   (g_{j*-1}, g_{j*}], g_0 = 0. Pairs that do not flip at any grid point are **censored** (no flip
   found in (0, ε_max]); their ε is +inf and they are never given ε_max silently.
2. **Refinement.** Each round queries ``points_per_round`` = k evenly spaced interior points of
   every open bracket and keeps the sub-bracket up to the first flipping point. k = 1 is
   bisection; a larger k (or "auto", which fills the oracle's ``capacity``) needs fewer rounds,
   which pays off when a round is expensive (a CKKS evaluation) and queries are cheap (slots).
3. A pair is done when its bracket width hi - lo <= max(atol, rtol·hi). The reported ε is ``hi``,
   a point that is known to flip, so ε_true in [ε - tol, ε].

Two options shape the traffic for an attacker who must not look like one (a client that counts
its flips, :mod:`hesig.defenses.detector`): ``ascending`` walks the coarse grid one point per
round and stops a pair at its first flip (one flip per pair instead of G - j* + 1), and ``split``
= f < 0.5 puts the single refinement point at lo + f·(hi - lo), so a query flips with probability
about f instead of 1/2, at about -ln 2 / (f ln f + (1-f) ln(1-f)) times the bisection's queries
(2.1x at f = 0.1). ``max_steps`` caps the refinement rounds (a search that must fit a per-input
evaluation budget: G + max_steps queries per pair at most).

Query cost per uncensored pair (linear grid): G + k·ceil(log_{k+1}(ε_max / (G·tol))); geometric
grid with ratio r = (ε_max/eps_min)^(1/(G-1)), rtol only, ε in (g_{j-1}, g_j] with j >= 2:
G + k·m with ceil(log_{k+1}((1 - 1/r) / rtol)) <= m <= ceil(log_{k+1}((r - 1) / rtol)), so
r - 1 <= (k + 1)·rtol guarantees a single refinement round. Queries are counted
per pair and returned. Rounds are batched over every unfinished pair; within a round the
queries go to the oracle in calls of its ``capacity`` so memory stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..core.defaults import (ATOL, COARSE_GRID, COARSE_GRIDS, COARSE_POINTS, EPS_MAX, EPS_MAX_LIMIT,
                             GEOMETRIC_EPS_MIN_FRACTION, MAX_SEARCH_ROUNDS, POINTS_PER_ROUND, RTOL)
from ..core.errors import InvalidValueError, ShapeError
from ..oracles.base import Oracle


@dataclass
class SearchResult:
    """Per-pair outcome; all tensors are [n_rows, k_directions] on the CPU.

    eps: float32, the smallest tested flipping ε (upper end of the final bracket); +inf if censored.
    eps_lo: float32, the largest tested non-flipping ε below it (0 if none was tested).
    censored: bool, True where no flip was found in (0, ε_max].
    queries: int32, oracle queries spent on the pair.
    rounds: number of batched rounds (coarse pass included).
    """

    eps: torch.Tensor
    eps_lo: torch.Tensor
    censored: torch.Tensor
    queries: torch.Tensor
    rounds: int

    @property
    def total_queries(self) -> int:
        return int(self.queries.sum())


def checked_rows(oracle: Oracle, directions: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The rows a search covers (default: all of the oracle's), int64 on the CPU, after checking that
    the directions [k, C, H, W] fit the oracle's inputs and the rows exist."""
    if directions.ndim != 4 or tuple(directions.shape[1:]) != tuple(oracle.input_shape):
        raise ShapeError(f"directions have shape {list(directions.shape[1:])} but the oracle's inputs are {list(oracle.input_shape)}")
    rows = torch.arange(oracle.num_rows) if rows is None else rows.to(torch.long).cpu()
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= oracle.num_rows):
        raise ShapeError(f"row index out of range 0..{oracle.num_rows - 1}")
    return rows


def in_row_groups(run: Callable[..., "SearchResult"], oracle: Oracle, directions: torch.Tensor, rows: torch.Tensor,
                  on_queries: Callable[[int], None] | None) -> "SearchResult | None":
    """When the oracle holds per-row state (a CKKS session, ``rows_at_once``) and there are more rows
    than it holds: ``run`` the search group by group, releasing each group when done, so memory does
    not grow with the number of rows; the parts joined. None when one call can take every row."""
    group = oracle.rows_at_once
    if group is None or rows.numel() <= group:
        return None
    parts = []
    for start in range(0, rows.numel(), group):
        part_rows = rows[start:start + group]
        parts.append(run(oracle, directions, part_rows, on_queries))
        oracle.release(part_rows)
    return SearchResult(eps=torch.cat([p.eps for p in parts]), eps_lo=torch.cat([p.eps_lo for p in parts]),
                        censored=torch.cat([p.censored for p in parts]),
                        queries=torch.cat([p.queries for p in parts]), rounds=max(p.rounds for p in parts))


class BoundarySearch:
    """Minimal-ε search with a first-crossing coarse pass and k-ary bracket refinement.

    Parameters are validated at construction (one-line ``InvalidValueError``):

    eps_max: upper end of the search interval, in L2 units of the direction (> 0).
    coarse_points: G >= 1 grid points of the first pass; the first crossing is resolved to ε_max/G.
    points_per_round: k >= 1 interior points per refinement round, or "auto" (fill ``capacity``).
    atol, rtol: stop when hi - lo <= max(atol, rtol·hi). At least one must be positive.
    split: where the one refinement point sits in its bracket, in (0, 1) (0.5: bisection); only
    with points_per_round = 1. ascending: the coarse pass one point per round, up to each pair's
    first flip. max_steps: at most this many refinement rounds (None: until the tolerance).
    grid: "linear" (g_j = ε_max·j/G) or "geometric" (log-spaced from eps_min to ε_max; needs G >= 2).
    eps_min: the geometric grid's first point, in (0, ε_max) (default ε_max·2^-16).
    """

    def __init__(self, eps_max: float = EPS_MAX, *, coarse_points: int = COARSE_POINTS,
                 points_per_round: int | str = POINTS_PER_ROUND, atol: float = ATOL, rtol: float = RTOL,
                 max_rounds: int = MAX_SEARCH_ROUNDS, split: float = 0.5, ascending: bool = False,
                 max_steps: int | None = None, grid: str = COARSE_GRID, eps_min: float | None = None):
        if not (isinstance(eps_max, (int, float)) and math.isfinite(eps_max) and 0 < eps_max <= EPS_MAX_LIMIT):
            raise InvalidValueError(f"eps_max must be in (0, {EPS_MAX_LIMIT:g}] (L2 units; images in [0, 1]^d are at most "
                                    f"sqrt(d) apart), got {eps_max}")
        if int(coarse_points) != coarse_points or coarse_points < 1:
            raise InvalidValueError(f"coarse_points must be an integer >= 1, got {coarse_points}")
        if points_per_round != "auto" and (not isinstance(points_per_round, int) or points_per_round < 1):
            raise InvalidValueError(f"points_per_round must be an integer >= 1 or 'auto', got {points_per_round!r}")
        for name, value in (("atol", atol), ("rtol", rtol)):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidValueError(f"{name} must be a finite number >= 0, got {value}")
        if rtol >= 1:
            raise InvalidValueError(f"rtol must be < 1 (a relative bracket width), got {rtol}")
        if atol <= 0 and rtol <= 0:
            raise InvalidValueError("at least one of atol and rtol must be positive")
        if not (isinstance(split, (int, float)) and 0 < split < 1):
            raise InvalidValueError(f"split must be in (0, 1), got {split}")
        if split != 0.5 and points_per_round != 1:
            raise InvalidValueError("a split other than 0.5 places one point per round: use points_per_round=1")
        if max_steps is not None and (int(max_steps) != max_steps or max_steps < 0):
            raise InvalidValueError(f"max_steps must be an integer >= 0, got {max_steps}")
        if grid not in COARSE_GRIDS:
            raise InvalidValueError(f"grid must be one of {', '.join(COARSE_GRIDS)}, got {grid!r}")
        if grid == "linear" and eps_min is not None:
            raise InvalidValueError("eps_min sets the first point of a geometric coarse grid: ask for the geometric grid "
                                    "(--coarse-grid geometric)")
        if grid == "geometric":
            if coarse_points < 2:
                raise InvalidValueError("a geometric grid needs coarse_points >= 2 (its first point is eps_min, its last eps_max)")
            eps_min = eps_max * GEOMETRIC_EPS_MIN_FRACTION if eps_min is None else eps_min
            if not (isinstance(eps_min, (int, float)) and math.isfinite(eps_min) and 0 < eps_min < eps_max):
                raise InvalidValueError(f"eps_min must be in (0, eps_max = {eps_max:g}), got {eps_min}")
        self.grid = grid
        self.eps_min = None if eps_min is None else float(eps_min)
        self.split = float(split)
        self.ascending = bool(ascending)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.eps_max = float(eps_max)
        self.coarse_points = int(coarse_points)
        self.points_per_round = points_per_round
        self.atol = float(atol)
        self.rtol = float(rtol)
        self.max_rounds = int(max_rounds)
        # Floor on the bracket width: guarantees termination when a pair flips arbitrarily close to
        # 0 (then rtol·hi shrinks with hi). 2^-30·ε_max is far below any useful tolerance.
        self._width_floor = self.eps_max * 2.0 ** -30

    def params(self) -> dict:
        out = {"eps_max": self.eps_max, "coarse_points": self.coarse_points,
               "points_per_round": self.points_per_round, "atol": self.atol, "rtol": self.rtol}
        # Only when set: the files of the plain search keep the metadata they always had.
        extra = {"split": self.split, "ascending": self.ascending, "max_steps": self.max_steps, "grid": self.grid,
                 "eps_min": self.eps_min}
        out.update({k: v for k, v in extra.items()
                    if v != {"split": 0.5, "ascending": False, "max_steps": None, "grid": "linear", "eps_min": None}[k]})
        return out

    def coarse_grid(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The G coarse points g_1 < ... < g_G = ε_max, float64 [G] (see the module docstring)."""
        g = self.coarse_points
        if self.grid == "geometric":
            steps = torch.arange(g, dtype=torch.float64, device=device) / (g - 1)
            points = self.eps_min * (self.eps_max / self.eps_min) ** steps
            points[-1] = self.eps_max  # exactly, whatever the rounding of the power
            return points
        return torch.arange(1, g + 1, dtype=torch.float64, device=device) * (self.eps_max / g)

    def run(self, oracle: Oracle, directions: torch.Tensor, rows: torch.Tensor | None = None,
            on_queries: Callable[[int], None] | None = None) -> SearchResult:
        """Search every (row, direction) pair.

        oracle: answers ``same_label``; its secrets are never read here.
        directions: float32 [k, C, H, W] matching ``oracle.input_shape``.
        rows: int64 [n] oracle rows to fingerprint (default: all of them).
        on_queries: called with the number of queries after every oracle call (progress bars).
        """
        rows = checked_rows(oracle, directions, rows)
        grouped = in_row_groups(self.run, oracle, directions, rows, on_queries)
        if grouped is not None:
            return grouped
        n, k = rows.numel(), directions.shape[0]
        pairs = n * k
        # All bookkeeping lives where the oracle computes (a GPU's memory, else the CPU), so a round
        # makes no host<->device copy per oracle call: one host sync per round (the open-bracket
        # count) instead of several per call, which left a GPU idle half the time.
        book = torch.device(oracle.device)
        book = book if book.type == "cuda" else torch.device("cpu")
        pair_row = rows.repeat_interleave(k).to(book)   # [P] oracle row of each pair
        pair_dir = torch.arange(k, device=book).repeat(n)  # [P] direction index of each pair
        dirs = directions.to(oracle.device, torch.float32)
        # Bracket bookkeeping in float64: the linear grid's points are exact multiples of its step.
        lo = torch.zeros(pairs, dtype=torch.float64, device=book)
        hi = torch.full((pairs,), math.inf, dtype=torch.float64, device=book)
        queries = torch.zeros(pairs, dtype=torch.int32, device=book)

        # 1. coarse pass over all pairs: G grid points each (ascending: one per round, to the first flip).
        grid = self.coarse_grid(book)
        all_pairs = torch.arange(pairs, device=book)
        if self.ascending:
            rounds = 0
            for j in range(self.coarse_points):
                active = torch.isinf(hi).nonzero().squeeze(1)
                if active.numel() == 0:
                    break
                points = grid[j:j + 1].expand(active.numel(), 1)
                flips = ask_pairs(oracle, dirs, pair_row, pair_dir, active, points, on_queries)
                queries[active] += 1
                self._narrow(lo, hi, active, points, flips)
                rounds += 1
        else:
            points = grid.expand(pairs, -1)
            flips = ask_pairs(oracle, dirs, pair_row, pair_dir, all_pairs, points, on_queries)
            queries += self.coarse_points
            self._narrow(lo, hi, all_pairs, points, flips)
            rounds = 1
        censored = torch.isinf(hi)
        steps = 0

        # 2. refinement rounds over the open brackets.
        while True:
            open_ = (~censored) & ((hi - lo) > self._tolerance(hi))
            active = open_.nonzero().squeeze(1)
            if active.numel() == 0 or (self.max_steps is not None and steps >= self.max_steps):
                break
            if rounds > self.max_rounds:
                raise RuntimeError(f"boundary search did not converge in {self.max_rounds} rounds")
            kpts = self._points_for(oracle, active.numel())
            frac = (torch.arange(1, kpts + 1, dtype=torch.float64, device=book) / (kpts + 1) if kpts > 1
                    else torch.tensor([self.split], dtype=torch.float64, device=book))
            steps += 1
            a_lo, a_hi = lo[active], hi[active]
            points = a_lo[:, None] + (a_hi - a_lo)[:, None] * frac[None, :]
            flips = ask_pairs(oracle, dirs, pair_row, pair_dir, active, points, on_queries)
            queries[active] += kpts
            self._narrow(lo, hi, active, points, flips)
            rounds += 1

        eps = hi.to(torch.float32).view(n, k).cpu()
        return SearchResult(eps=eps, eps_lo=lo.to(torch.float32).view(n, k).cpu(), censored=censored.view(n, k).cpu(),
                            queries=queries.view(n, k).cpu(), rounds=rounds)

    # -- internals ---------------------------------------------------------------------------

    def _tolerance(self, hi: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.rtol * hi, min=max(self.atol, self._width_floor))

    def _points_for(self, oracle: Oracle, active: int) -> int:
        if self.points_per_round == "auto":
            return max(1, oracle.capacity // max(1, active))
        return int(self.points_per_round)

    @staticmethod
    def _narrow(lo: torch.Tensor, hi: torch.Tensor, idx: torch.Tensor, points: torch.Tensor, flips: torch.Tensor) -> None:
        """Keep, for each pair idx[a], the sub-bracket ending at its first flipping point.

        points: float64 [A, m] increasing; flips: bool [A, m]. Pairs with no flip keep hi and move
        lo up to their last point.
        """
        m = points.shape[1]
        any_flip = flips.any(1)
        first = torch.where(any_flip, flips.to(torch.int8).argmax(1), torch.full_like(any_flip, m, dtype=torch.long))
        padded = torch.cat([lo[idx][:, None], points, hi[idx][:, None]], dim=1)  # index 0: lo, m+1: hi
        lo[idx] = padded.gather(1, first[:, None]).squeeze(1)          # point before the first flip
        hi[idx] = padded.gather(1, (first + 1)[:, None]).squeeze(1)    # the first flip (or old hi)


def ask_pairs(oracle: Oracle, dirs: torch.Tensor, pair_row: torch.Tensor, pair_dir: torch.Tensor,
              idx: torch.Tensor, points: torch.Tensor, on_queries: Callable[[int], None] | None) -> torch.Tensor:
    """Query ε = points[a, j] along direction pair_dir[idx[a]] for row pair_row[idx[a]].

    Returns bool [A, m] on the bookkeeping device (that of ``idx``): True where the label
    flipped. Calls the oracle in chunks of its capacity; perturbations are built on the
    oracle's device, and nothing is copied between host and device per call.
    """
    m = points.shape[1]
    total = idx.numel() * m
    flat_pair = idx.repeat_interleave(m)
    flat_eps = points.reshape(-1).to(torch.float32)
    out = torch.empty(total, dtype=torch.bool, device=idx.device)
    start = 0
    while start < total:
        # A budget smaller than one call shrinks the call, so the budget is spent exactly
        # (the call after it is refused by the oracle with the budget's own message).
        step = max(1, int(oracle.capacity))
        if oracle.remaining is not None and 0 < oracle.remaining < step:
            step = oracle.remaining
        sl = slice(start, min(total, start + step))
        start = sl.stop
        pair = flat_pair[sl]
        eps = flat_eps[sl].to(dirs.device)
        # index_select + in-place scale: one allocation per call on the hot path.
        pert = torch.index_select(dirs, 0, pair_dir[pair].to(dirs.device)).mul_(eps.view(-1, 1, 1, 1))
        out[sl] = ~oracle.same_label(pert, pair_row[pair]).to(out.device)
        if on_queries is not None:
            on_queries(sl.stop - sl.start)
    return out.view(idx.numel(), m)
