"""Executors: who computes the independent chunks of a run.

The run store (:mod:`hesig.jobs.runstore`) decides *what* is missing and saves each result
atomically; an executor only decides *where and when* a chunk is computed. The default runs
chunks in this process, in order; :class:`hesig.jobs.ray_executor.RayExecutor` (``--executor
ray``, the optional ``ray`` extra) runs them on a Ray cluster behind the same :meth:`Executor.map`,
with no change to any job.

A job whose tasks share a query budget asks the executor for a :class:`BudgetLedger`: one
counter that every task, wherever it runs, reserves its oracle calls from *before* making them,
so N concurrent chunks together never spend more than the budget.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, Sequence, TypeVar

Task = TypeVar("Task")


class BudgetLedger(ABC):
    """A query budget shared by all the tasks of one job (picklable: tasks carry it to workers)."""

    @abstractmethod
    def reserve(self, count: int) -> tuple[bool, int, int]:
        """Take ``count`` queries if that many are left: ``(granted, spent, remaining)`` after the attempt."""

    @abstractmethod
    def charge(self, count: int) -> None:
        """Count ``count`` queries spent earlier (chunks found on disk when a job resumes)."""

    @property
    @abstractmethod
    def total(self) -> int:
        """The budget."""

    @abstractmethod
    def remaining(self) -> int:
        """Queries left (>= 0)."""


class LocalLedger(BudgetLedger):
    """The in-process ledger: a plain counter."""

    def __init__(self, total: int):
        self._total, self.spent = int(total), 0

    @property
    def total(self) -> int:
        return self._total

    def reserve(self, count: int) -> tuple[bool, int, int]:
        granted = self.spent + count <= self._total
        if granted:
            self.spent += count
        return granted, self.spent, self.remaining()

    def charge(self, count: int) -> None:
        self.spent += int(count)

    def remaining(self) -> int:
        return max(0, self._total - self.spent)


class Executor(ABC):
    """Maps a compute function over independent tasks and yields ``(task, result)`` pairs as they finish.

    Contract: every task's result is yielded at most once per call; results may come back in any
    order; an exception in one task propagates to the caller after the executor stops handing
    out new tasks (chunks already yielded have been saved by the store, so nothing finished is
    lost). ``compute`` must be picklable for an executor that runs it elsewhere. A task that
    shares a query budget with the others gets a ledger from :meth:`ledger`.
    """

    name: str = "executor"

    @abstractmethod
    def map(self, compute: Callable[[Task], Any], tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Yield ``(task, compute(task))`` for every task."""

    def ledger(self, total: int) -> BudgetLedger:
        """A budget of ``total`` queries that every task of the next :meth:`map` draws from."""
        return LocalLedger(total)

    def close(self) -> None:
        """Release what the executor started (a local Ray instance); it may not be used afterwards."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs the tasks one after another in this process (the default)."""

    name = "in-process"

    def map(self, compute: Callable[[Task], Any], tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        for task in tasks:
            yield task, compute(task)


#: Executor names (as ``--executor`` spells them) -> class, or "module:Class" imported on demand
#: (Ray is an optional extra: ``pip install -e ".[ray]"``).
EXECUTORS: dict[str, Any] = {"in-process": InProcessExecutor, "ray": "hesig.jobs.ray_executor:RayExecutor"}


def make_executor(name: str = "in-process", **options: Any) -> Executor:
    """Build an executor by name. Options left at None are dropped; an option the executor does not
    take (``workers`` for ``in-process``) is a one-line :class:`InvalidValueError`."""
    from ..core.errors import InvalidValueError
    if name not in EXECUTORS:
        raise InvalidValueError(f"unknown executor '{name}' (choose from {', '.join(EXECUTORS)})")
    options = {k: v for k, v in options.items() if v is not None}
    cls = EXECUTORS[name]
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    if name == "in-process" and options:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(options))
        raise InvalidValueError(f"{flags} only apply to --executor ray")
    return cls(**options)
