"""The Ray executor (``--executor ray``): the chunks of a run store computed by actors on a Ray cluster.

Design:

* **Actors, one chunk in flight each.** ``workers`` actors are started (``num_cpus`` /
  ``num_gpus`` each); the compute function is put into the object store once and every actor
  deserialises it once, so per-worker state (the model, a GPU copy of it, the oracle module, a
  TenSEAL context built from bytes inside the worker) is built there and never pickled back. Each
  actor gets the next missing chunk as soon as it returns one, so fast workers take more chunks.
* **Only the driver writes.** A worker returns a chunk's tensors; the run store in the driver
  saves them atomically. A worker that dies (killed, OOM, its node lost) returns nothing: its chunk
  is recomputed on a fresh actor (``max_retries`` times), so no chunk is ever written twice or half.
* **Errors.** A task that raises (an exhausted budget, bad input) stops new chunks from being
  handed out; the chunks still in flight are drained (and saved), then the task's own
  :class:`~hesig.core.errors.HesigError` is raised, unwrapped from Ray's wrapper.
* **Ctrl-C** (or any exception in the caller) kills this run's actors, which stops the cluster
  work at once; chunks already returned are saved.
* **Budgets.** :meth:`RayExecutor.ledger` is one small actor (0 CPUs, pinned to the driver's
  node, never restarted) that every worker reserves its oracle calls from before making them.

Nothing here imports Ray at module level: Ray is imported when the executor connects.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import socket
import sys
import tempfile
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from ..core.errors import HesigError, InvalidValueError
from .executor import BudgetLedger, Executor, LocalLedger, Task

#: Actor restarts per chunk before the job gives up on it.
MAX_RETRIES = 3


def _ray():
    import ray
    return ray


class _ChunkWorker:
    """A Ray actor (wrapped by ``ray.remote`` at run time) holding one deserialised compute function."""

    def __init__(self, compute: Callable[[Any], Any]):
        self.compute = compute

    def run(self, task: Any) -> Any:
        return self.compute(task)

    def pid(self) -> int:
        return os.getpid()


class _LedgerActor:
    """The shared query budget: one counter that every worker reserves from."""

    def __init__(self, total: int):
        self.ledger = LocalLedger(total)

    def reserve(self, count: int) -> tuple[bool, int, int]:
        return self.ledger.reserve(count)

    def charge(self, count: int) -> None:
        self.ledger.charge(count)

    def remaining(self) -> int:
        return self.ledger.remaining()


class RayLedger(BudgetLedger):
    """A handle to a :class:`_LedgerActor`; picklable, so tasks carry it to their workers."""

    def __init__(self, handle: Any, total: int):
        self.handle, self._total = handle, int(total)

    @property
    def total(self) -> int:
        return self._total

    def reserve(self, count: int) -> tuple[bool, int, int]:
        return tuple(_ray().get(self.handle.reserve.remote(int(count))))  # type: ignore[return-value]

    def charge(self, count: int) -> None:
        _ray().get(self.handle.charge.remote(int(count)))

    def remaining(self) -> int:
        return int(_ray().get(self.handle.remaining.remote()))


class RayExecutor(Executor):
    """Run the chunks on Ray actors.

    address: None starts a local Ray instance on this machine (stopped by :meth:`close` or at
    exit); "auto" joins the cluster this machine belongs to (``ray start`` was run here);
    "HOST:PORT" joins the cluster whose head's GCS listens there (``ray start --head --port``).
    When Ray is already initialised in this process it is used as it is.
    workers: actors to run at once (default: as many as the cluster's CPUs / GPUs allow).
    cpus_per_worker / gpus_per_worker: each actor's Ray resources (CKKS: CPUs; plaintext: a GPU
    share, e.g. 1 or 0.25). max_retries: fresh actors per chunk after a worker death.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, max_retries: int = MAX_RETRIES,
                 log: Callable[[str], None] | None = None):
        if importlib.util.find_spec("ray") is None:
            raise InvalidValueError("--executor ray needs Ray: pip install -e \".[ray]\" (or pip install 'ray>=2.40')")
        if workers is not None and (isinstance(workers, bool) or int(workers) != workers or workers < 1):
            raise InvalidValueError(f"--workers must be an integer >= 1, got {workers}")
        for flag, value in (("--worker-cpus", cpus_per_worker), ("--worker-gpus", gpus_per_worker)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InvalidValueError(f"{flag} must be a number >= 0, got {value}")
        if cpus_per_worker == 0 and gpus_per_worker == 0:
            raise InvalidValueError("a Ray worker needs --worker-cpus > 0 or --worker-gpus > 0")
        if int(max_retries) != max_retries or max_retries < 0:
            raise InvalidValueError(f"max_retries must be an integer >= 0, got {max_retries}")
        self.address = _check_address(address)
        self.workers, self.max_retries = workers, int(max_retries)
        self.cpus_per_worker, self.gpus_per_worker = float(cpus_per_worker), float(gpus_per_worker)
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._started = False
        #: Retries made by the last :meth:`map` (a test and the benchmark read it).
        self.retries = 0

    # -- connection -----------------------------------------------------------------------------
    def connect(self):
        """Initialise Ray (or reuse this process's); a cluster that cannot be reached is one line."""
        ray = _ray()
        if ray.is_initialized():
            return ray
        import logging
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": False, "configure_logging": True}
        if self.address is None:
            need = math.ceil((self.workers or 1) * self.cpus_per_worker)
            kwargs["num_cpus"] = max(os.cpu_count() or 1, need)  # what was asked for runs (oversubscribed if so)
            # A local instance turns token authentication on by itself; its notice is not the user's business.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        try:
            with _held_stderr(self.address is not None):
                ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InvalidValueError(f"cannot reach a Ray cluster at --ray-address {self.address or 'local'}: {first}") from None
        self._started = True
        return ray

    def close(self) -> None:
        if self._started:
            ray = _ray()
            if ray.is_initialized():
                ray.shutdown()
            self._started = False

    def ledger(self, total: int) -> BudgetLedger:
        ray = self.connect()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        actor = ray.remote(_LedgerActor).options(num_cpus=0, max_restarts=0, scheduling_strategy=here).remote(int(total))
        return RayLedger(actor, total)

    # -- the map ---------------------------------------------------------------------------------
    def _fit(self, ray, wanted: int | None, tasks: int) -> int:
        """How many actors to start: what was asked for, capped by the tasks and by what the cluster holds."""
        have = ray.cluster_resources()
        fits = []
        for key, per in (("CPU", self.cpus_per_worker), ("GPU", self.gpus_per_worker)):
            if per > 0:
                if have.get(key, 0) < per:
                    raise InvalidValueError(f"each Ray worker asks for {per:g} {key}s but the cluster has "
                                            f"{have.get(key, 0):g}; lower --worker-{key.lower()}s or add nodes")
                fits.append(int(have.get(key, 0) // per + 1e-9))
        most = min(fits)
        n = min(wanted or most, tasks)
        if n > most:
            self.log(f"warning: the Ray cluster fits {most} workers of {self.cpus_per_worker:g} CPUs / "
                     f"{self.gpus_per_worker:g} GPUs, not {n}; running {most}")
            n = most
        return max(1, n)

    def _spawn(self, ray, compute_ref):
        actor = ray.remote(_ChunkWorker).options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                                                 max_restarts=0, max_task_retries=0)
        return actor.remote(compute_ref)

    def map(self, compute: Callable[[Task], Any], tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        tasks = list(tasks)
        if not tasks:
            return
        ray = self.connect()
        from ray.exceptions import (ActorDiedError, NodeDiedError, ObjectLostError, RayActorError, RayTaskError,
                                    WorkerCrashedError)
        lost_worker = (RayActorError, ActorDiedError, WorkerCrashedError, NodeDiedError, ObjectLostError)
        n = self._fit(ray, self.workers, len(tasks))
        compute_ref = ray.put(compute)
        pending: deque = deque(tasks)
        attempts: dict[Any, int] = {}
        actors: dict[int, Any] = {}
        inflight: dict[Any, tuple[int, Any]] = {}
        error: BaseException | None = None
        self.retries = 0

        def submit(slot: int) -> None:
            task = pending.popleft()
            inflight[actors[slot].run.remote(task)] = (slot, task)

        try:
            for slot in range(n):
                actors[slot] = self._spawn(ray, compute_ref)
                submit(slot)
            while inflight:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                slot, task = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as exc:  # the task raised: keep its own error, drain the others
                    error = error or _unwrap(exc)
                    continue
                except lost_worker as exc:  # the worker died: nothing came back, so compute the chunk again
                    attempts[task] = attempts.get(task, 0) + 1
                    _kill(ray, actors[slot])
                    if attempts[task] > self.max_retries:
                        error = error or HesigError(f"chunk {task} failed on {attempts[task]} Ray workers in a row "
                                                    f"(last: {_first_line(exc)}); finished chunks are kept, rerun to resume")
                        continue
                    self.retries += 1
                    self.log(f"warning: a Ray worker died computing chunk {task} ({_first_line(exc)}); "
                             f"recomputing it on a fresh worker (retry {attempts[task]} of {self.max_retries})")
                    actors[slot] = self._spawn(ray, compute_ref)
                    pending.appendleft(task)
                    if error is None:
                        submit(slot)
                    continue
                yield task, result
                if error is None and pending:
                    submit(slot)
            if error is not None:
                raise error
        finally:  # also on Ctrl-C and when the caller stops early: stop this run's cluster work now
            for actor in actors.values():
                _kill(ray, actor)


def _check_address(address: str | None) -> str | None:
    """None / "local" (start Ray here), "auto", "ray://HOST:PORT" or "HOST:PORT" (probed: one line if unreachable)."""
    if address is None or address in ("", "local"):
        return None
    if address == "auto":
        return address
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidValueError(f"--ray-address must be auto, local or HOST:PORT, got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise InvalidValueError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); "
                                "start one with 'ray start --head' or check the address") from None
    return address


@contextlib.contextmanager
def _held_stderr(hold: bool):
    """Hold back what Ray's C++ client writes to fd 2 while it connects (a retry line per second
    when something that is not a Ray head answers): replayed if the connection succeeds, dropped
    if it fails (then the caller's one error line says why)."""
    if not hold:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def _unwrap(exc: BaseException) -> BaseException:
    """The exception a remote task raised, without Ray's wrapper (so a HesigError stays one line)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already dead, or Ray is shutting down
        pass
