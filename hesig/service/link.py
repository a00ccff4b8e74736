"""The mailbox between the server's HTTP handlers and a session's fingerprint thread.

The fingerprint thread runs the search as in process; where the in-process oracle would call
the victim, :class:`VictimLink` posts a *task* (upload row r; answer result s) and blocks until
the victim's request delivers it. HTTP handlers take tasks and deliver uploads and replies. At
most one task is pending, so every delivery is checked against it: a reply to any other result
(replayed, out of order, guessed) is refused with a 409 and changes nothing.

The thread gives up (:class:`SessionEnded`) when the session is cancelled (the victim ended it,
re-opened its job, or the server shuts down) or when the victim has sent nothing for
``victim_timeout`` seconds; the image it was working on is then not saved, and a resumed job
fingerprints it again.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ..core.errors import ClientRefusal, HesigError
from .protocol import RequestRefused


class SessionEnded(HesigError):
    """The session ended before the job did (cancelled, or its victim went silent)."""


class VictimLink:
    _NONE = object()

    def __init__(self, victim_timeout: float):
        self.victim_timeout = float(victim_timeout)
        self._cv = threading.Condition()
        self._task: dict[str, Any] | None = None   # the pending task, as the victim sees it
        self._result: bytes | None = None          # the pending result message
        self._delivery: tuple[str, Any] | None = None
        self._seq = 0
        self._verdict: object = self._NONE
        self._ended: str | None = None             # why the session ended (cancel / timeout)
        self._final: dict[str, Any] | None = None  # "done" / "failed" task, once the job stopped
        self.last_seen = time.monotonic()
        self.counters = {"evaluations": 0, "queries": 0, "rows_uploaded": 0}

    # -- the fingerprint thread ------------------------------------------------------------------

    def request_input(self, row: int, index: int) -> Path:
        """Ask the victim for row ``row`` (dataset index ``index``); block until it is uploaded.
        Returns the spooled upload's path."""
        kind, value = self._post({"task": "input", "row": int(row), "index": int(index)}, None)
        self.counters["rows_uploaded"] += 1
        return value

    def exchange(self, row: int, result: bytes, count: int) -> bytes:
        """Post a result message for row ``row`` answering ``count`` queries; block for the reply bits."""
        with self._cv:
            self._seq += 1
            seq = self._seq
        kind, value = self._post({"task": "result", "seq": seq, "row": int(row), "count": int(count),
                                  "bytes": len(result)}, result)
        if kind == "refusal":
            raise ClientRefusal(f"the victim refused to answer: {value}")
        self.counters["evaluations"] += 1
        self.counters["queries"] += int(count)
        return value

    def _post(self, task: dict[str, Any], result: bytes | None) -> tuple[str, Any]:
        with self._cv:
            self._check()
            self._task, self._result, self._delivery = task, result, None
            self.last_seen = max(self.last_seen, time.monotonic())  # the victim's clock starts now
            self._cv.notify_all()
            while self._delivery is None:
                self._check()
                self._cv.wait(timeout=1.0)
            delivery, self._delivery, self._task, self._result = self._delivery, None, None, None
            return delivery

    def _check(self) -> None:
        if self._ended is None and time.monotonic() - self.last_seen > self.victim_timeout:
            self._ended = f"the victim sent nothing for {self.victim_timeout:.0f} s"
        if self._ended is not None:
            raise SessionEnded(f"session ended: {self._ended}")

    def finish(self, final: dict[str, Any]) -> None:
        """The job stopped: every later task request gets ``final`` (a done or failed task)."""
        with self._cv:
            self._final, self._task, self._result = final, None, None
            self._cv.notify_all()

    def cancel(self, reason: str) -> None:
        with self._cv:
            if self._ended is None:
                self._ended = reason
            self._cv.notify_all()

    @property
    def ended(self) -> str | None:
        """Why the session ended (None while it runs)."""
        return self._ended

    @property
    def final(self) -> dict[str, Any] | None:
        """The job's last task (done / failed), once it stopped."""
        return self._final

    # -- HTTP handlers ---------------------------------------------------------------------------

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def next_task(self, wait: float) -> dict[str, Any]:
        """The pending task, the final one, or ``{"task": "wait"}`` after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        with self._cv:
            self.touch()
            while True:
                if self._final is not None:
                    return dict(self._final)
                if self._ended is not None:
                    return {"task": "failed", "reason": f"session ended: {self._ended}"}
                if self._task is not None and self._delivery is None:
                    return dict(self._task)
                left = deadline - time.monotonic()
                if left <= 0:
                    self.touch()
                    return {"task": "wait"}
                self._cv.wait(timeout=min(left, 1.0))

    def result(self, seq: int) -> bytes:
        with self._cv:
            self.touch()
            task = self._pending("result", "seq", seq)
            assert task is not None and self._result is not None
            return self._result

    def expects_input(self, row: int) -> None:
        """Refuse (409) an upload of a row the job is not waiting for."""
        with self._cv:
            self.touch()
            self._pending("input", "row", row)

    def deliver_input(self, row: int, path: Path) -> None:
        """Hand an uploaded input to the job and wait for its verdict: the job opens it (parses
        and checks every ciphertext) first, so a malformed input is refused (422) here, and the
        job goes on waiting for a good one."""
        with self._cv:
            self._pending("input", "row", row)
            self._verdict = self._NONE
            self._delivery = ("input", path)
            self._cv.notify_all()
            while self._verdict is self._NONE:
                self.touch()  # the victim is waiting on this request, not silent
                if self._ended is not None or self._final is not None:
                    why = self._ended or (self._final or {}).get("reason") or (self._final or {}).get("task")
                    raise RequestRefused(409, f"this session ended before the input was checked ({why})")
                self._cv.wait(timeout=1.0)
            verdict, self._verdict = self._verdict, self._NONE
        if verdict is not None:
            raise RequestRefused(422, f"input refused: {verdict}")

    def input_verdict(self, error: str | None) -> None:
        """The job's verdict on the input it was just handed (None: opened)."""
        with self._cv:
            self._verdict = error
            self._cv.notify_all()

    def deliver_reply(self, seq: int, reply: bytes) -> None:
        with self._cv:
            task = self._pending("result", "seq", seq)
            expected = (task["count"] + 7) // 8
        if len(reply) != expected:
            raise RequestRefused(400, f"a reply to {task['count']} queries is {expected} bytes, got {len(reply)}")
        self._deliver("result", "seq", seq, ("reply", reply))

    def deliver_refusal(self, seq: int, reason: str) -> None:
        self._deliver("result", "seq", seq, ("refusal", reason))

    def _deliver(self, kind: str, key: str, value: int, delivery: tuple[str, Any]) -> None:
        with self._cv:
            self.touch()
            self._pending(kind, key, value)
            self._delivery = delivery
            self._cv.notify_all()

    def _pending(self, kind: str, key: str, value: int) -> dict[str, Any]:
        """The pending task if it is (kind, key=value) and not yet delivered; else a 409."""
        task = self._task
        if self._ended is not None or self._final is not None:
            why = self._ended or (self._final or {}).get("reason") or (self._final or {}).get("task")
            raise RequestRefused(409, f"this session has ended ({why})")
        if task is None or self._delivery is not None or task["task"] != kind or task[key] != value:
            what = "nothing" if task is None or self._delivery is not None else f"{task['task']} {key} {task.get(key)}"
            raise RequestRefused(409, f"{kind} {key} {value} is not what this session waits for ({what}); "
                                      "a replayed or out-of-order message changes nothing")
        return task
