"""The FastAPI application of ``hesig serve`` (the protocol: hesig.service.protocol; the OpenAPI
page: ``/docs`` on a running server).

Uploads are streamed to a spool file as they arrive -- size-limited (413 past the limit, or at
once when Content-Length says so), dropped when they stall -- and handed to the job by path; a
body is never held in memory twice. Every refusal is an HTTP 4xx with ``{"detail": "<one line>"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import tempfile
import time
from pathlib import Path

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..core.errors import HesigError
from .hub import Hub
from .protocol import API, MAX_POLL_S, RequestRefused

OCTETS = "application/octet-stream"
#: Largest JSON body (a declaration of 100,000 indices is under 1 MB) and largest reply.
MAX_JSON_BYTES = 2 << 20
MAX_REPLY_BYTES = 4096


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


async def spool(request: Request, folder: Path, limit: int, stall: float, touch=lambda: None) -> Path:
    """Stream the request body into a new file in ``folder``; 413 past ``limit`` bytes, 408 when no
    piece arrives for ``stall`` seconds, 400 when the body is shorter than its Content-Length."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestRefused(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise RequestRefused(413, f"the body is {int(declared)} bytes, the limit is {limit}")
    fd, name = tempfile.mkstemp(dir=folder, prefix="upload-")
    path, total = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as fh:
            pieces = request.stream().__aiter__()
            while True:
                try:
                    piece = await asyncio.wait_for(pieces.__anext__(), stall)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise RequestRefused(408, f"the upload stalled for {stall:.0f} s") from None
                total += len(piece)
                if total > limit:
                    raise RequestRefused(413, f"the body exceeds the limit of {limit} bytes")
                fh.write(piece)
                touch()
        if declared is not None and total != int(declared):
            raise RequestRefused(400, f"the body is {total} bytes, Content-Length said {declared}")
        if total == 0:
            raise RequestRefused(400, "the body is empty")
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        raise RequestRefused(400, f"the connection closed after {total} bytes of the body") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


async def small_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestRefused(413, f"the body is {int(declared)} bytes, the limit is {limit}")
    body = bytearray()
    try:
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise RequestRefused(413, f"the body exceeds the limit of {limit} bytes")
    except ClientDisconnect:
        raise RequestRefused(400, "the connection closed during the body") from None
    return bytes(body)


async def json_body(request: Request) -> object:
    body = await small_body(request, MAX_JSON_BYTES)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestRefused(400, "the body is not JSON") from None


def create_app(hub: Hub) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        # uvicorn re-raises SIGTERM / SIGINT once it has stopped serving, so the sessions are ended
        # here: every job thread stops at its next step and keeps its finished images.
        await run_in_threadpool(hub.shutdown)

    app = FastAPI(title="hesig serve", version="1", lifespan=lifespan,
                  description="The model owner's encrypted-inference server. The protocol is documented in "
                              "hesig.service.protocol and README 'The encrypted oracle as a service'.")
    token = hub.settings.token

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise RequestRefused(401, "missing or wrong bearer token")

    @app.exception_handler(RequestRefused)
    async def refused(request: Request, exc: RequestRefused):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=exc.status, headers=headers)

    @app.exception_handler(HesigError)
    async def hesig_error(request: Request, exc: HesigError):
        return JSONResponse({"detail": _one_line(str(exc))}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": _one_line(f"{where}: {first.get('msg', 'invalid request')}")}, status_code=422)

    auth = [Depends(authorized)]

    @app.get(f"{API}/info", dependencies=auth)
    def info() -> dict:
        """The model's public facts: input shape, classes, first convolution, CKKS parameters."""
        return hub.info()

    @app.post(f"{API}/sessions", status_code=201, dependencies=auth)
    async def open_session(request: Request) -> dict:
        """Open a session with the victim's declaration (owner, dataset, split, split_hash, indices,
        layout, client_policy); re-opening the same owner's job resumes it."""
        return hub.open_session(await json_body(request))

    @app.get(f"{API}/sessions/{{sid}}", dependencies=auth)
    def status(sid: str) -> dict:
        return hub.session(sid).status()

    @app.delete(f"{API}/sessions/{{sid}}", dependencies=auth)
    def end(sid: str) -> dict:
        return hub.end_session(sid)

    @app.put(f"{API}/sessions/{{sid}}/contexts", status_code=201, dependencies=auth)
    async def context(sid: str, request: Request) -> dict:
        """A public context message (wire format): public key, relinearization (and Galois) keys."""
        session = hub.session(sid)
        path = await spool(request, hub.spool, hub.settings.max_upload_bytes, hub.settings.stall_timeout,
                           session.link.touch)
        return await run_in_threadpool(hub.add_context, sid, path)

    @app.get(f"{API}/sessions/{{sid}}/task", dependencies=auth)
    def task(sid: str, wait: float = Query(10.0, ge=0.0, le=MAX_POLL_S)) -> dict:
        """The next task: input / result / wait / done / failed (long poll up to ``wait`` seconds)."""
        return hub.session(sid).link.next_task(wait)

    @app.put(f"{API}/sessions/{{sid}}/inputs/{{row}}", status_code=202, dependencies=auth)
    async def upload_input(sid: str, row: int, request: Request) -> dict:
        """The encrypted input of row ``row`` (wire ``input`` message, session = row), when asked for it."""
        link = hub.session(sid).link
        link.expects_input(row)  # 409 before reading a body nobody asked for
        t0 = time.perf_counter()
        path = await spool(request, hub.spool, hub.settings.max_upload_bytes, hub.settings.stall_timeout, link.touch)
        hub.log(f"session {sid[:8]}: row {row} received, {path.stat().st_size / 1e6:.1f} MB in "
                f"{time.perf_counter() - t0:.1f} s")
        try:
            await run_in_threadpool(link.deliver_input, row, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return {"row": row, "accepted": True}

    @app.get(f"{API}/sessions/{{sid}}/results/{{seq}}", dependencies=auth,
             response_class=Response, responses={200: {"content": {OCTETS: {}}}})
    def result(sid: str, seq: int) -> Response:
        """The pending result message ``seq`` (wire ``result`` message)."""
        return Response(hub.session(sid).link.result(seq), media_type=OCTETS)

    @app.put(f"{API}/sessions/{{sid}}/results/{{seq}}/reply", dependencies=auth)
    async def reply(sid: str, seq: int, request: Request) -> dict:
        """ceil(count / 8) bytes of packed bits answering result ``seq``."""
        link = hub.session(sid).link
        link.deliver_reply(seq, await small_body(request, MAX_REPLY_BYTES))
        return {"seq": seq, "accepted": True}

    @app.put(f"{API}/sessions/{{sid}}/results/{{seq}}/refusal", dependencies=auth)
    async def refusal(sid: str, seq: int, request: Request) -> dict:
        """The victim refuses result ``seq``: ``{"reason": "<one line>"}``; the job stops."""
        body = await json_body(request)
        reason = body.get("reason") if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            raise RequestRefused(400, 'a refusal is {"reason": "<one line>"}')
        hub.session(sid).link.deliver_refusal(seq, _one_line(reason, 200))
        return {"seq": seq, "accepted": True}

    return app
