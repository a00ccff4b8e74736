"""The server's state: the model owner's attack setup, the victims' sessions and their jobs.

One :class:`Hub` per ``hesig serve`` process. It holds the model (as a polynomial network), the
directions and the search settings -- the adversary's side of ``hesig fingerprint --oracle
ckks`` -- and a run folder. Each victim session runs one fingerprint job in its own thread,
through the same ``fingerprint_rows`` and run store as in process, so a job killed with the
server resumes from its finished images when the victim comes back.

Limits: at most ``max_sessions`` running sessions; at most ``max_active`` homomorphic
computations at once across all of them (one shared semaphore: a session setup peaks at ~3 GB).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..core.defaults import CKKS_PROCESSES
from ..core.errors import HesigError, InvalidValueError
from ..core.io import canonical_json, ensure_writable_dir
from ..jobs.fingerprint import choose_search, fingerprint_rows, job_config, store_dir
from ..models import load_model
from ..oracles.ckks.channel import check_memory
from ..oracles.ckks.params import CKKSParameters
from ..oracles.ckks.polymodel import POLY_CNN_DEPTH, poly_cnn
from ..oracles.ckks.server import CKKSServer
from ..signature.directions import Directions
from ..signature.prior_search import PriorGuidedSearch
from ..signature.search import BoundarySearch
from .link import SessionEnded, VictimLink
from .protocol import RequestRefused, parse_declaration
from .remote import ContextStore, RemoteFactory, spool_dir

#: Finished sessions stay readable (their final task, their status) this long, seconds.
KEEP_FINISHED_S = 600.0


@dataclass
class ServeSettings:
    model: Path
    directions: Path
    runs: Path
    search: BoundarySearch | PriorGuidedSearch
    token: str | None = None
    #: The prior-guided search (hesig.signature.prior_search) from the owner's fingerprint file: the
    #: hub runs it instead of ``search`` once the model and directions are loaded (the prior must match both).
    prior: Path | None = None
    prior_steps: int | None = None
    max_upload_bytes: int = 512 << 20
    max_sessions: int = 8
    max_active: int = 1
    victim_timeout: float = 120.0
    stall_timeout: float = 60.0
    processes: int = CKKS_PROCESSES  # per image, the server's work split over this many processes (hesig.oracles.ckks.parallel)


@dataclass
class VictimSession:
    id: str
    job: str
    declaration: dict[str, Any]
    link: VictimLink
    contexts: ContextStore
    created: float = field(default_factory=time.time)
    thread: threading.Thread | None = None
    finished_at: float | None = None
    #: The same job's earlier session, ended when this one opened: its thread finishes before ours starts.
    previous: "VictimSession | None" = None

    @property
    def state(self) -> str:
        final = self.link.final
        if final is not None:
            return final["task"]
        if self.link.ended is not None:
            return "ended"
        return "running" if self.thread is not None else "open"

    def status(self) -> dict[str, Any]:
        return {"session": self.id, "job": self.job, "state": self.state, "rows": len(self.declaration["indices"]),
                **self.link.counters, "final": self.link.final}


class Hub:
    def __init__(self, settings: ServeSettings, log=None):
        self.settings = settings
        self.log = log or (lambda message: print(f"hesig serve: {message}", file=sys.stderr, flush=True))
        check_memory()
        self.target = load_model(settings.model)
        self.poly = poly_cnn(self.target.model, self.target.in_shape, self.target.arch)
        self.params = CKKSParameters()
        self.params.check_depth(self.poly.depth, self.target.arch)
        self.dirs = Directions.load(settings.directions)
        self.dirs.check_input_shape(self.target.in_shape, what=f"model {self.target.arch}'s input")
        self.search = choose_search(settings.search, self.dirs, settings.directions, settings.prior,
                                    settings.prior_steps, self.target.hash)
        ensure_writable_dir(settings.runs)
        self.spool = spool_dir(settings.runs)
        for stale in self.spool.iterdir():  # uploads cut off by a previous server's end
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        self.gate = threading.BoundedSemaphore(settings.max_active)
        self.sessions: dict[str, VictimSession] = {}
        self._by_job: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- what anyone may know ----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The public facts a victim needs to build a matching client (nothing about the attack)."""
        return {"hesig_version": __version__, "in_shape": list(self.target.in_shape),
                "num_classes": int(self.poly.fc2_weight.shape[0]), "arch": self.target.arch,
                "conv_kernel": int(self.poly.conv_weight.shape[-1]), "conv_stride": int(self.poly.stride),
                "ckks": self.params.describe(POLY_CNN_DEPTH), "max_upload_bytes": self.settings.max_upload_bytes}

    # -- sessions ----------------------------------------------------------------------------------

    def job_of(self, declaration: dict[str, Any]) -> str:
        ident = {**declaration, "model_hash": self.target.hash, "directions_hash": self.dirs.hash,
                 "search": self.search.params()}
        return hashlib.sha256(canonical_json(ident).encode()).hexdigest()[:24]

    def open_session(self, body: Any) -> dict[str, Any]:
        declaration = parse_declaration(body)
        job = self.job_of(declaration)
        with self._lock:
            self._purge()
            previous = self.sessions.get(self._by_job.get(job, ""))
            running = [s for s in self.sessions.values() if s.state in ("open", "running") and s is not previous]
            if len(running) >= self.settings.max_sessions:
                raise RequestRefused(503, f"the server holds {len(running)} sessions, its limit; retry later")
            if previous is not None:  # the owner came back (it restarted, or the server did not notice it left)
                previous.link.cancel("the victim re-opened this job in a new session")
                self.log(f"session {previous.id[:8]} ended: its victim re-opened job {job[:8]}")
            sid = secrets.token_urlsafe(24)
            session = VictimSession(sid, job, declaration, VictimLink(self.settings.victim_timeout), ContextStore(),
                                    previous=previous)
            self.sessions[sid] = session
            self._by_job[job] = sid
        self.log(f"session {sid[:8]} opened: job {job[:8]}, {len(declaration['indices'])} images, "
                 f"{declaration['layout']} layout")
        return {"session": sid, "job": job, "rows": len(declaration["indices"])}

    def session(self, sid: str) -> VictimSession:
        session = self.sessions.get(sid)
        if session is None:
            raise RequestRefused(404, "unknown session (it ended long ago, or the server restarted: open a new one)")
        return session

    def end_session(self, sid: str) -> dict[str, Any]:
        session = self.session(sid)
        session.link.cancel("the victim ended the session")
        return session.status()

    def add_context(self, sid: str, path: Path) -> dict[str, Any]:
        """Check a public context message (no secret key, this layout, the model's depth) and keep it."""
        session = self.session(sid)
        session.link.touch()
        try:
            message = path.read_bytes()
            server = CKKSServer(message, self.poly)  # refuses a secret key, a forged id, too few levels
            if server.layout != session.declaration["layout"]:
                raise InvalidValueError(f"the context is for the {server.layout} layout, the session declared "
                                        f"{session.declaration['layout']}")
            cid = server.context_id
            del server, message
        except HesigError as exc:
            path.unlink(missing_ok=True)
            raise RequestRefused(422, f"context refused: {exc}") from None
        with self._lock:
            if session.state not in ("open", "running"):
                path.unlink(missing_ok=True)
                raise RequestRefused(409, "this session has ended")
            session.contexts.add(cid, path)
            if session.thread is None:
                session.thread = threading.Thread(target=self._run, args=(session,), daemon=True,
                                                  name=f"job-{session.job[:8]}")
                session.thread.start()
        return {"context_id": cid}

    def _purge(self) -> None:
        """Forget sessions finished long ago; end sessions that never started a job (no context)
        and whose victim has been silent past the timeout, so they cannot hold a slot forever."""
        now = time.time()
        for s in self.sessions.values():
            if s.thread is None and s.finished_at is None:
                if s.state == "open" and time.monotonic() - s.link.last_seen > self.settings.victim_timeout:
                    s.link.cancel(f"no public context within {self.settings.victim_timeout:.0f} s")
                if s.state != "open":
                    s.finished_at = now
        for sid, s in list(self.sessions.items()):
            if s.finished_at is not None and now - s.finished_at > KEEP_FINISHED_S:
                del self.sessions[sid]
                if self._by_job.get(s.job) == sid:
                    del self._by_job[s.job]

    def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            session.link.cancel("the server shut down")
        for session in list(self.sessions.values()):
            if session.thread is not None:
                session.thread.join(timeout=30)

    # -- the job -----------------------------------------------------------------------------------

    def out_path(self, job: str) -> Path:
        return Path(self.settings.runs) / f"{job}.safetensors"

    def _description(self, declaration: dict[str, Any]) -> dict[str, Any]:
        """What the fingerprint file records about the oracle, as the in-process CKKS factory does."""
        return {"ckks": {**self.params.describe(POLY_CNN_DEPTH), "layout": declaration["layout"]},
                "client_policy": declaration["client_policy"]}

    def _config(self, declaration: dict[str, Any]) -> dict[str, Any]:
        """The file's identity as ``hesig fingerprint --oracle ckks`` writes it, with what the victim
        declared about its images in place of the data the server never sees."""
        return {**job_config(declaration["dataset"], declaration["split"], declaration["split_hash"], self.target,
                             self.dirs, "ckks", self._description(declaration)), "transport": "http"}

    @contextlib.contextmanager
    def _gated(self, link: VictimLink):
        """The shared semaphore around one homomorphic computation, given up (SessionEnded) as soon
        as the session ends while it waits for its turn."""
        while not self.gate.acquire(timeout=1.0):
            if link.ended is not None:
                raise SessionEnded(f"session ended: {link.ended}")
        try:
            if link.ended is not None:
                raise SessionEnded(f"session ended: {link.ended}")
            yield
        finally:
            self.gate.release()

    def _run(self, session: VictimSession) -> None:
        previous, session.previous = session.previous, None
        if previous is not None and previous.thread is not None:
            previous.thread.join()  # one thread per job's run store at a time
        declaration = session.declaration
        indices = list(declaration["indices"])
        factory = RemoteFactory(self.poly, session.link, indices, session.contexts, self.params,
                                self._description(declaration), lambda: self._gated(session.link),
                                processes=self.settings.processes)
        out = self.out_path(session.job)
        done = len(list(store_dir(out).glob("chunk-*"))) if store_dir(out).is_dir() else 0
        if done:
            self.log(f"session {session.id[:8]} resumes job {session.job[:8]}: {done} of {len(indices)} images "
                     "already fingerprinted")
        t0 = time.perf_counter()
        try:
            fp = fingerprint_rows(factory, self.dirs.vectors, torch.arange(len(indices)), torch.tensor(indices),
                                  self.search, out, self._config(declaration), chunk_size=1,
                                  inputs=(self.settings.model, self.settings.directions), progress=False)
            final = {"task": "done", "rows": len(indices), "queries_total": int(fp.queries.sum()),
                     "evaluations_this_session": session.link.counters["evaluations"],
                     "fingerprint_sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
            self.log(f"session {session.id[:8]} done: {out.name}, {final['queries_total']} queries, "
                     f"{time.perf_counter() - t0:.1f} s this session")
        except SessionEnded as exc:
            final = {"task": "failed", "reason": str(exc)}
            self.log(f"session {session.id[:8]}: {exc}")
        except HesigError as exc:
            final = {"task": "failed", "reason": str(exc)}
            self.log(f"session {session.id[:8]} failed: {exc}")
        except Exception as exc:  # a bug: keep the server up, tell the victim one line, log the trace here
            final = {"task": "failed", "reason": f"internal server error ({type(exc).__name__})"}
            self.log(f"session {session.id[:8]} crashed:\n{traceback.format_exc()}")
        session.contexts.clear()
        session.finished_at = time.time()
        session.link.finish(final)
