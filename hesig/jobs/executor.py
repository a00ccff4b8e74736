"""Executors: who computes the independent chunks of a run.

The run store (:mod:`hesig.jobs.runstore`) decides *what* is missing and saves each result
atomically; an executor only decides *where and when* a chunk is computed. The default runs
chunks in this process, in order. A distributed executor (Ray) implements the same
:meth:`Executor.map` and needs no change to any job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, Sequence, TypeVar

Task = TypeVar("Task")


class Executor(ABC):
    """Maps a compute function over independent tasks and yields ``(task, result)`` pairs as they finish.

    Contract: every task is computed at most once per call; results may come back in any order;
    an exception in one task propagates to the caller after the executor stops handing out new
    tasks (chunks already yielded have been saved by the store, so nothing finished is lost).
    ``before_each`` runs in the caller's process right before a task is started (the fingerprint
    job uses it to hand the next chunk the query budget that is left).
    """

    name: str = "executor"

    @abstractmethod
    def map(self, compute: Callable[[Task], Any], tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        """Yield ``(task, compute(task))`` for every task."""


class InProcessExecutor(Executor):
    """Runs the tasks one after another in this process (the default)."""

    name = "in-process"

    def map(self, compute: Callable[[Task], Any], tasks: Sequence[Task]) -> Iterator[tuple[Task, Any]]:
        for task in tasks:
            yield task, compute(task)


#: Executor names the CLI offers; a later issue adds "ray" behind the same interface.
EXECUTORS = {"in-process": InProcessExecutor}


def make_executor(name: str = "in-process", **options: Any) -> Executor:
    from ..core.errors import InvalidValueError
    if name not in EXECUTORS:
        raise InvalidValueError(f"unknown executor '{name}' (choose from {', '.join(EXECUTORS)})")
    return EXECUTORS[name](**options)
