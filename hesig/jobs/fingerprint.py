"""Job ``hesig fingerprint``: fingerprint a dataset split through an oracle, chunk by chunk.

The rows are cut into chunks; each chunk is one task for the executor: build the oracle that
holds the chunk's secrets (through the oracle registry, never by name here), run the boundary
search, return the chunk's fingerprint tensors. The run store ``<out>.chunks/`` pins the job's
configuration and keeps every finished chunk (atomically written, checksummed), so a killed job
resumes where it stopped; when every chunk is done they are merged into ``<out>`` and the store
is removed. The query budget is shared by all chunks (resumed chunks count) and is checked
before every oracle call, so it is never overshot.

Also ``hesig ckks-params``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..core.defaults import ATOL, CHUNK_SIZE, CKKS_ENCRYPTIONS, CKKS_PROCESSES, COARSE_GRID, COARSE_POINTS, EPS_MAX, POINTS_PER_ROUND, RTOL
from ..core.errors import ClientRefusal, HesigError, InvalidValueError, QueryBudgetExhausted, ShapeError
from ..core.io import ensure_writable_dir, tensor_hash
from ..core.outputs import JOB_KEY, KIND_KEY, guard_output, identity
from ..core.runtime import parse_indices
from ..data import load_dataset
from ..models import load_model
from ..oracles.base import Oracle, OracleWrapper, add_costs
from ..oracles.registry import OracleFactory, OracleKind, oracle_kind
from ..signature.directions import Directions
from ..signature.fingerprints import Fingerprints
from ..signature.prior_search import PriorGuidedSearch
from ..signature.search import BoundarySearch
from .executor import BudgetLedger, Executor, InProcessExecutor
from .runstore import RunStore

#: Metadata of a finished file that describes its outcome, not the job (ignored when comparing jobs).
OUTCOME_KEYS = ("queries_total", "censored_fraction", "compute_seconds", "oracle_costs")


def store_dir(out: str | Path) -> Path:
    """The run store of the job writing ``out``: ``<out>.chunks/``."""
    out = Path(out)
    return out.with_name(out.name + ".chunks")


def fingerprint_rows(make_oracle: OracleFactory, directions: torch.Tensor, images: torch.Tensor,
                     indices: torch.Tensor, search: BoundarySearch, out: str | Path, config: dict[str, Any], *,
                     chunk_size: int, budget: int | None = None, executor: Executor | None = None,
                     inputs: tuple[str | Path, ...] = (), force: bool = False, progress: bool = True) -> Fingerprints:
    """Fingerprint ``images`` [n, C, H, W] (dataset positions ``indices`` [n]) into the file ``out``.

    make_oracle(secrets, remaining_budget) builds the oracle holding one chunk of secrets.
    config: the job's identity (dataset, hashes, oracle, search parameters, ...); it becomes the
    file's metadata, with the outcome (queries, censoring, seconds, oracle costs) added.
    inputs: the files the job read (``out`` may not replace them); force: replace an ``out``
    that holds another job's fingerprints (or any other file) instead of refusing.
    """
    if chunk_size < 1:
        raise InvalidValueError(f"chunk size must be >= 1, got {chunk_size}")
    out = Path(out)
    n = images.shape[0]
    config = {**config, "search": search.params(), "chunk_size": int(chunk_size),
              "indices_hash": tensor_hash(indices), "n": int(n), "hesig_version": __version__}
    if out.exists():
        try:
            done = Fingerprints.load(out)
        except HesigError:
            done = None
        if done is not None and _job(done.meta) == _job(config):
            return done  # the same job already finished: rerunning it is a no-op
    guard_output(out, "fingerprints", _job(config), inputs=inputs, force=force)
    store = RunStore(store_dir(out), "fingerprint", _job(config), replace=force,
                     log=lambda message: print(message, file=sys.stderr))
    bounds = [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]
    used = 0
    bar = tqdm(total=n, desc="fingerprint", unit="img", disable=not progress, dynamic_ncols=True)

    def check(i: int, tensors: dict) -> str | None:
        s, e = bounds[i]
        shapes = {name: tuple(tensors[name].shape) if name in tensors else None for name in ("eps", "censored", "queries")}
        if any(shape != (e - s, directions.shape[0]) for shape in shapes.values()):
            return f"holds fingerprints of another shape ({shapes['eps']}, this job needs {(e - s, directions.shape[0])})"
        if "indices" not in tensors or not torch.equal(tensors["indices"], indices[s:e]):
            return "covers other inputs than this job"
        try:
            Fingerprints.from_tensors(tensors, {})
        except HesigError as exc:
            return f"is not valid ({exc})"
        return None

    def count(i: int, tensors: dict, meta: dict) -> None:
        nonlocal used
        s, e = bounds[i]
        used += int(tensors["queries"].sum())
        bar.update(e - s)
        bar.set_postfix(q_per_img=f"{used / max(1, bar.n):.0f}")

    # One ledger for the whole budget, charged with the chunks found on disk; every chunk, on
    # whichever worker, reserves each oracle call from it first, so concurrent chunks never overshoot.
    ledger = None if budget is None else (executor or InProcessExecutor()).ledger(budget)

    def loaded(i: int, tensors: dict, meta: dict) -> None:
        count(i, tensors, meta)
        if ledger is not None:
            ledger.charge(int(tensors["queries"].sum()))

    compute = FingerprintChunk(make_oracle, directions, images, indices, bounds, search, ledger, str(store.root))
    try:
        parts = store.chunks([f"chunk-{i:05d}" for i in range(len(bounds))], compute, executor=executor,
                             check=check, on_loaded=loaded, on_saved=count)
    finally:
        bar.close()
    chunks = [Fingerprints.from_tensors(tensors, meta) for tensors, meta in parts]
    result = Fingerprints.concat(chunks, {**config, **identity("fingerprints", _job(config))})
    costs: dict = {}
    for chunk in chunks:
        costs = add_costs(costs, chunk.meta.get("oracle_costs") or {})
    seconds = [c.meta.get("seconds") for c in chunks]
    # Compute time summed over chunks, so it survives interruptions and resumes.
    result.meta.update({"queries_total": int(result.queries.sum()),
                        "censored_fraction": float(result.censored.float().mean()),
                        "compute_seconds": None if None in seconds else round(sum(seconds), 1)})
    if costs:
        result.meta["oracle_costs"] = costs
    result.save(out)
    store.remove()
    return result


class LedgerOracle(OracleWrapper):
    """A chunk's oracle whose every call is first reserved from the job's shared :class:`BudgetLedger`.

    ``remaining`` is the ledger's count as of this oracle's last reservation (other workers may
    have spent more since: then the next reservation is refused, never overshot).
    """

    def __init__(self, inner: Oracle, ledger: BudgetLedger):
        super().__init__(inner)
        self.ledger = ledger
        self._left = ledger.remaining()

    @property
    def remaining(self) -> int:
        return self._left

    def _answer(self, perturbations: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        count = int(rows.shape[0])
        granted, spent, self._left = self.ledger.reserve(count)
        if not granted:
            raise QueryBudgetExhausted(f"query budget exhausted: {spent} of {self.ledger.total} queries used, "
                                       f"the next call needs {count}")
        return super()._answer(perturbations, rows)


class FingerprintChunk:
    """The executor's task for ``fingerprint_rows``: chunk ``i`` -> its fingerprint tensors and metadata.

    A module-level, picklable object (no closure over the job's state): a distributed executor
    ships it to each worker once. It holds the oracle factory, the directions, the rows' images
    and indices, the chunk bounds, the search and the budget ledger (None: no budget).
    """

    def __init__(self, make_oracle: OracleFactory, directions: torch.Tensor, images: torch.Tensor,
                 indices: torch.Tensor, bounds: list[tuple[int, int]], search: BoundarySearch,
                 ledger: BudgetLedger | None, store_root: str):
        self.make_oracle, self.directions, self.images, self.indices = make_oracle, directions, images, indices
        self.bounds, self.search, self.ledger, self.store_root = bounds, search, ledger, store_root

    def __call__(self, i: int) -> tuple[dict, dict]:
        s, e = self.bounds[i]
        t0 = time.perf_counter()
        oracle = self.make_oracle(self.images[s:e], None)
        if self.ledger is not None:
            oracle = LedgerOracle(oracle, self.ledger)
        try:
            res = self.search.run(oracle, self.directions)
        except QueryBudgetExhausted as exc:
            raise QueryBudgetExhausted(f"{exc}; the finished chunks are saved in {self.store_root} and a rerun with a "
                                       "larger --budget resumes from them") from None
        finally:
            oracle.close()
        part = Fingerprints(res.eps, res.censored, res.queries, self.indices[s:e].clone(),
                            {"chunk": i, "seconds": time.perf_counter() - t0, "oracle_costs": oracle.costs()})
        return part.tensors(), part.meta


class WorkerFactory:
    """An oracle factory that is rebuilt in every process it is unpickled in (a Ray worker), so
    ``--device auto`` resolves on the worker (its GPU, or its CPU), not on the driver."""

    def __init__(self, kind: OracleKind, target: Any, options: dict[str, Any], built: OracleFactory | None = None):
        self.kind, self.target, self.options, self._built = kind, target, options, built

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_built": None}

    def _factory(self) -> OracleFactory:
        if self._built is None:
            self._built = self.kind.factory(self.target, **self.options)
        return self._built

    def __call__(self, secrets: Any, budget: int | None) -> Any:
        return self._factory()(secrets, budget)

    def describe(self) -> dict[str, Any]:
        return self._factory().describe()


def _job(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a fingerprint file's metadata that identifies the job (not its outcome or version)."""
    return {k: v for k, v in meta.items() if k not in OUTCOME_KEYS and k not in ("hesig_version", KIND_KEY, JOB_KEY)}


def prior_search(prior: str | Path, steps: int, model_hash: str, directions_hash: str) -> PriorGuidedSearch:
    """The prior-guided search from the owner's fingerprint file ``prior``: it must be of this model
    and these directions, and not of the victims' (test) split."""
    fp = Fingerprints.load(prior)
    fp.check_compatible({"model_hash": model_hash, "directions_hash": directions_hash}, "this fingerprint job")
    if fp.meta.get("split") == "test":
        raise InvalidValueError(f"{prior}: a prior made of the test split would read the victims' inputs; "
                                "fingerprint the owner's data (the train split) for the prior")
    if fp.meta.get("search", {}).get("kind") == PriorGuidedSearch.kind:
        raise InvalidValueError(f"{prior}: a prior must come from the plain search, not from another prior-guided one")
    return PriorGuidedSearch.from_prior(fp, steps)


def choose_search(plain: BoundarySearch, dirs: Directions, directions_file: str | Path, prior: str | Path | None,
                  prior_steps: int | None, model_hash: str):
    """The search a job runs: a set with its own query points (``learned``) at its knots; else the
    prior-guided search when a prior is given; else ``plain``."""
    if dirs.knots is not None:
        if prior is not None:
            raise InvalidValueError(f"{directions_file} carries its own query points (family '{dirs.family}'); "
                                    "it takes no --prior")
        return dirs.point_search()
    if prior is not None:
        return prior_search(prior, int(prior_steps), model_hash, dirs.hash)
    return plain


def job_config(dataset: str, split: str, split_hash: str, target: Any, dirs: Directions, oracle: str,
               description: dict[str, Any]) -> dict[str, Any]:
    """The identity a fingerprint file records (and its run store pins): the data, the model, the
    directions, the oracle kind and the oracle factory's ``describe()``. ``hesig serve`` passes what
    its victim declared about the data, which the server never sees."""
    return {"dataset": dataset, "split": split, "split_hash": split_hash, "model_hash": target.hash,
            "arch": target.arch, "directions_hash": dirs.hash, "directions_family": dirs.family,
            "directions_count": dirs.count, "oracle": oracle, "seed": dirs.seed, **description}


def fingerprint_job(model_dir: str | Path, directions_file: str | Path, dataset: str, split: str, out: str | Path, *,
                    oracle: str = "plaintext", indices: str | None = None, eps_max: float = EPS_MAX,
                    rtol: float = RTOL, atol: float = ATOL, coarse_points: int = COARSE_POINTS,
                    points_per_round: int | str = POINTS_PER_ROUND, coarse_grid: str = COARSE_GRID,
                    eps_min: float | None = None, chunk_size: int | None = None,
                    budget: int | None = None, batch_size: int | None = None, device: str | None = None,
                    data_root=None, download: bool = False, ckks_layout: str = "batched",
                    ckks_encryption: str = CKKS_ENCRYPTIONS[0], client_policy: str | None = None,
                    ckks_processes: int = CKKS_PROCESSES, prior: str | Path | None = None, prior_steps: int | None = None,
                    executor: Executor | None = None, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Fingerprint (a subset of) a dataset split through a label-change oracle; resumable.

    oracle: a kind of :mod:`hesig.oracles.registry` ("plaintext": the secrets inside the oracle
    object; "ckks": a TenSEAL client holding the secret key, a server holding the public context,
    ``ckks_layout`` batched or compact, ``ckks_encryption`` seeded or public-key,
    ``ckks_processes`` the processes each party splits an image's work over: not part of the
    pinned config, since the results do not depend on it). prior / prior_steps: the prior-guided
    search instead of the grid and bisection (:mod:`hesig.signature.prior_search`): ``prior_steps``
    queries per pair at the quantiles of the owner's fingerprint file ``prior`` (same model and
    directions; never the test split, which holds the victims). Directions that carry their own
    query points (``learned``) are always searched at those knots, and take no prior. client_policy:
    the victim client's policy (:mod:`hesig.oracles.policies`); CKKS default: the most secure,
    ``strict+budget:1+fresh-keys``, which answers one result per key and so stops a search that
    needs more; plaintext default: the plain bit. chunk_size: rows per atomically saved chunk (default: the oracle kind's).
    """
    if (prior is None) != (prior_steps is None):
        raise InvalidValueError("the prior-guided search needs both a prior fingerprint file and its queries per pair")
    search = BoundarySearch(eps_max, coarse_points=coarse_points, points_per_round=points_per_round,
                            atol=atol, rtol=rtol, grid=coarse_grid, eps_min=eps_min)
    kind = oracle_kind(oracle)
    if budget is not None and budget < 1:
        raise InvalidValueError(f"query budget must be >= 1, got {budget}")
    target = load_model(model_dir)
    dirs = Directions.load(directions_file)
    dirs.check_input_shape(target.in_shape, what=f"model {target.arch}'s input")
    search = choose_search(search, dirs, directions_file, prior, prior_steps, target.hash)
    data = load_dataset(dataset, split, data_root, download)
    if data.shape != target.in_shape:
        raise ShapeError(f"{data.name} images are {list(data.shape)} but model {target.arch} takes {list(target.in_shape)}")
    idx = parse_indices(indices, len(data))
    ensure_writable_dir(Path(out).parent)
    options = {"device": device, "batch_size": batch_size, "layout": ckks_layout, "encryption": ckks_encryption,
               "client_policy": client_policy, "processes": ckks_processes}
    make_oracle = kind.factory(target, **options)
    config = job_config(data.name, data.split, data.split_hash, target, dirs, oracle, make_oracle.describe())
    if chunk_size is None:
        on_gpu = torch.device(getattr(make_oracle, "device", "cpu")).type == "cuda"
        chunk_size = CHUNK_SIZE.get(f"{kind.name}-cuda", kind.chunk_size) if on_gpu else kind.chunk_size
    t0 = time.perf_counter()
    try:
        fp = fingerprint_rows(WorkerFactory(kind, target, options, make_oracle), dirs.vectors, data.images[idx],
                              data.indices[idx], search, out, config, chunk_size=chunk_size,
                              budget=budget, executor=executor, inputs=(model_dir, directions_file), force=force,
                              progress=progress)
    except ClientRefusal as exc:
        policy = config.get("client_policy")
        raise ClientRefusal(f"{exc} (client policy {policy}); to measure the attack against a client without a "
                            "reply budget, rerun with --client-policy strict and another --out (or --force)") from None
    summary = {"out": str(out), "seconds_this_run": round(time.perf_counter() - t0, 1),
               "device": str(getattr(make_oracle, "device", "cpu")), **fp.summary(),
               "model_hash": target.hash, "directions_hash": dirs.hash}
    if fp.meta.get("oracle_costs"):
        summary["oracle_costs"] = fp.meta["oracle_costs"]
    return summary


def ckks_params_job(model_dir: str | Path | None = None) -> dict[str, Any]:
    """The CKKS parameters, their security level and depth budget (and a model's needs, if given)."""
    from ..oracles.ckks import POLY_CNN_DEPTH, CKKSParameters, poly_cnn  # TenSEAL: only when asked for
    params = CKKSParameters()
    out = params.describe(POLY_CNN_DEPTH)
    if model_dir is not None:
        target = load_model(model_dir)
        poly = poly_cnn(target.model, target.in_shape, target.arch)
        params.check_depth(poly.depth, target.arch)
        out.update({"model": str(model_dir), "arch": target.arch, "depth_required": poly.depth, "fits": True})
    return out
