"""``hesig victim``: the data owner's process. It holds the images and the CKKS secret key,
talks to a ``hesig serve`` server over HTTP (hesig.service.protocol) and reveals per result only
the bits its client policy allows. Nothing secret is ever sent: the context message carries
the public and evaluation keys only (the server refuses anything else), inputs are ciphertexts,
replies are bits.

Faults: a dropped connection or a restarting server is retried (bounded: ``retries`` attempts
per request, backoff 0.5 s doubling to 5 s); a server that lost the session (it restarted) gets
a new one for the same job, which resumes from the images it had finished. The job's name on the
server derives from ``owner``, a secret this process keeps in ``owner_file`` (mode 0600) until
the job is done, so a restarted victim resumes its own job and nobody else can reach it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import torch

from ..core.defaults import CKKS_LAYOUTS, CKKS_PROCESSES, VICTIM_REOPENS, VICTIM_RETRIES
from ..core.errors import ClientRefusal, HesigError, InvalidValueError, MismatchError, ShapeError
from ..core.io import atomic_write_text
from ..oracles.ckks import wire
from ..oracles.ckks.helpers import check_processes
from ..oracles.ckks.client import CKKSClient
from ..oracles.ckks.params import CKKSParameters
from ..oracles.policies import parse_client_policy
from .protocol import API, OWNER


class ServerRefused(HesigError):
    """The server answered a request with a 4xx (its one-line reason is the message)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"the server refused ({status}): {detail}")
        self.status = status


class SessionLost(HesigError):
    """The server no longer knows the session (it restarted): open a new one."""


def read_owner(path: Path) -> str:
    """The victim's secret job key: read from ``path``, or made and written there (0600)."""
    if path.exists():
        owner = path.read_text().strip()
        if not OWNER.match(owner):
            raise InvalidValueError(f"{path} does not hold a victim job key (delete it to start the job afresh)")
        return owner
    owner = secrets.token_urlsafe(32)
    atomic_write_text(path, owner + "\n")
    os.chmod(path, 0o600)
    return owner


class Victim:
    """images float [n, C, H, W] in [0, 1]; declared: dataset, split, split_hash and indices [n] as
    told to the server (recorded in its fingerprint file); policy: a client policy spec."""

    def __init__(self, server: str, images: torch.Tensor, declared: dict[str, Any], *, policy: str | None = None,
                 layout: str = "batched", token: str | None = None, owner_file: Path, retries: int = VICTIM_RETRIES,
                 reopens: int = VICTIM_REOPENS, poll: float = 20.0, prefetch: bool = True,
                 log: Callable[[str], None] = lambda m: None, processes: int = CKKS_PROCESSES):
        if layout not in CKKS_LAYOUTS:
            raise InvalidValueError(f"unknown CKKS layout '{layout}' (choose from {', '.join(CKKS_LAYOUTS)})")
        if not server.startswith(("http://", "https://")):
            raise InvalidValueError(f"--server must be an http:// or https:// URL, got '{server[:80]}'")
        if images.ndim != 4 or images.shape[0] != len(declared["indices"]):
            raise ShapeError("the victim needs images [n, C, H, W] and one declared index per image")
        if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise InvalidValueError("the victim's images must be finite and in [0, 1]")
        self.images = images.detach().cpu().double().numpy()
        self.declared, self.layout, self.log = declared, layout, log
        # A real victim's flooding noise must be unpredictable: a secret seed, not the policy's
        # reproducible default (an attacker who knows the noise stream can subtract it).
        self.policy = dataclasses.replace(parse_client_policy(policy).check_encrypted(), seed=secrets.randbits(63))
        self.retries, self.reopens, self.poll, self.prefetch = int(retries), int(reopens), float(poll), bool(prefetch)
        self.processes = check_processes(processes)  # the client's encryption, over its own helper processes
        self.owner = read_owner(owner_file)
        self._keys = 0  # key pairs made so far, over every session: each salts its flooding noise apart
        self.owner_file = owner_file
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(connect=5.0, read=max(60.0, poll + 30.0), write=120.0, pool=10.0)
        self.http = httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=timeout)
        self.upload_timeout = httpx.Timeout(connect=5.0, read=1800.0, write=600.0, pool=10.0)
        self.stats = {"bytes_up": 0, "bytes_down": 0, "contexts_sent": 0, "inputs_sent": 0, "results_answered": 0,
                      "queries_answered": 0, "encrypt_seconds": 0.0, "decrypt_seconds": 0.0, "retries": 0,
                      "upload_seconds": 0.0, "sessions": 0}

    # -- HTTP with bounded retries ---------------------------------------------------------------

    def _request(self, method: str, path: str, *, body: Callable[[], Any] | None = None, length: int | None = None,
                 session_call: bool = True, timeout=None, **kwargs) -> httpx.Response:
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                content = body() if body is not None else None
                headers = {"Content-Length": str(length)} if length is not None else None
                response = self.http.request(method, path, content=content, headers=headers,
                                             timeout=timeout or self.http.timeout, **kwargs)
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                detail = _detail(response)
                if response.status_code == 404 and session_call:
                    raise SessionLost(detail)
                if response.status_code not in (502, 503, 504):
                    raise ServerRefused(response.status_code, detail)
                error = f"HTTP {response.status_code}: {detail}"
            if attempt == self.retries:
                raise HesigError(f"the server at {self.http.base_url} did not answer {method} {path.split('/')[-1]} "
                                 f"after {self.retries + 1} attempts ({error})")
            self.stats["retries"] += 1
            self.log(f"retrying {method} {path.rsplit('/', 1)[-1]} in {delay:.1f} s ({error})")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    # -- the protocol ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        info = _json(self._request("GET", f"{API}/info", session_call=False), "info")
        for key in ("num_classes", "conv_kernel", "conv_stride"):
            if type(info.get(key)) is not int or not 1 <= info[key] <= 100_000:
                raise MismatchError(f"the server's info has no valid {key}; refused")
        shape = info.get("in_shape")
        if not isinstance(shape, list) or tuple(shape) != tuple(self.images.shape[1:]):
            raise ShapeError(f"the server's model takes {info.get('in_shape')}, the images are {list(self.images.shape[1:])}")
        self.info = info
        for reopen in range(self.reopens + 1):
            try:
                final = self._session()
                break
            except SessionLost as exc:
                if reopen == self.reopens:
                    raise HesigError(f"the server lost the session {self.reopens + 1} times ({exc})") from None
                self.log(f"the server lost the session ({exc}); opening a new one for the same job")
        if final["task"] == "failed":
            reason = str(final.get("reason", "no reason given"))
            raise (ClientRefusal if "refused to answer" in reason else HesigError)(f"the server's job failed: {reason}")
        self.owner_file.unlink(missing_ok=True)  # the job is done: the key is no longer needed
        return {"job": self.job, **final, **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.stats.items()},
                "seconds": round(time.perf_counter() - t0, 1), "client_policy": self.policy.spec}

    def _session(self) -> dict[str, Any]:
        body = {"owner": self.owner, **self.declared, "layout": self.layout, "client_policy": self.policy.spec}
        opened = _json(self._request("POST", f"{API}/sessions", json=body, session_call=False), "session")
        if not all(isinstance(opened.get(k), str) and SAFE_ID.match(opened[k]) for k in ("session", "job")):
            raise MismatchError("the server's session answer has no valid session and job ids; refused")
        self.sid, self.job = opened["session"], opened["job"]
        self.stats["sessions"] += 1
        self.log(f"session open: job {self.job[:8]}, {len(self.images)} images")
        if getattr(self, "_prepared", None) is not None:
            self._prepared[2].join()  # a prefetch of the session the server lost: its key is gone with it
        self._clients: dict[int, CKKSClient] = {}  # row -> the client holding its key
        self._contexts_sent: set[str] = set()
        self._prepared = None
        self._new_key()
        base = f"{API}/sessions/{self.sid}"
        while True:
            task = _json(self._request("GET", f"{base}/task", params={"wait": self.poll}), "task")
            kind = task.get("task")
            if kind == "wait":
                continue
            if kind in ("done", "failed"):  # what the victim reports of it: known fields, short values
                return {k: task[k] for k in FINAL_FIELDS
                        if isinstance(task.get(k), (str, int)) and len(str(task[k])) <= 300}
            if kind not in ("input", "result") or type(task.get("row")) is not int:
                raise MismatchError(f"the server sent a malformed task ({str(task)[:80]}); refused")
            if kind == "input":
                self._send_input(base, task["row"])
            elif type(task.get("seq")) is not int or task["seq"] < 1:
                raise MismatchError(f"the server sent a result task without a valid seq ({str(task)[:80]}); refused")
            else:
                self._answer(base, task["seq"], task["row"])

    def _make_client(self) -> CKKSClient:
        client = CKKSClient(CKKSParameters(), layout=self.layout, policy=self.policy,
                            num_outputs=int(self.info["num_classes"]), key_index=self._keys, processes=self.processes)
        client.set_conv_geometry(int(self.info["conv_kernel"]), int(self.info["conv_stride"]))
        self._keys += 1
        return client

    def _new_key(self) -> None:
        """A new key pair for the next input; its public context goes to the server at once."""
        self._client = self._make_client()
        self._send_context(self._client)

    def _send_context(self, client: CKKSClient) -> None:
        if client.context_id in self._contexts_sent:
            return
        message = client.context_message()
        self._request("PUT", f"{API}/sessions/{self.sid}/contexts", body=lambda: message, length=len(message))
        self._contexts_sent.add(client.context_id)
        self.stats["bytes_up"] += len(message)
        self.stats["contexts_sent"] += 1

    def _client_for_next_input(self) -> CKKSClient:
        """The key the next input goes under: the current one, or a new one under fresh-keys once
        the current one holds an input."""
        used = set(self._clients.values()) | ({self._prepared[1]} if self._prepared else set())
        if self.policy.fresh_keys and self._client in used:
            self._client = self._make_client()
        return self._client

    def _encrypt(self, row: int, client: CKKSClient) -> tuple[dict, list[bytes], float]:
        t0 = time.perf_counter()
        fields, parts = client.encrypt_parts(self.images[row], session=row)
        return fields, parts, time.perf_counter() - t0

    def _prefetch(self, after: int) -> None:
        """Encrypt the row after ``after`` in a background thread while the server evaluates: the
        server asks for rows in order, so the next upload is usually ready when it is asked for
        (a second encrypted image in memory, ~374 MB for MNIST's batched layout)."""
        row = after + 1
        if not self.prefetch or row >= len(self.images) or row in self._clients:
            return
        client = self._client_for_next_input()
        box: dict = {}
        thread = threading.Thread(target=lambda: box.update(out=self._encrypt(row, client)), daemon=True)
        thread.start()
        self._prepared = (row, client, thread, box)

    def _take_prepared(self, row: int):
        """The prefetched encryption of ``row`` (waiting for it), or None; a prefetch of another
        row is dropped and its session forgotten by the client."""
        if self._prepared is None:
            return None
        prow, client, thread, box = self._prepared
        self._prepared = None
        thread.join()
        if prow != row or "out" not in box:
            client.forget(prow)
            return None
        return client, box["out"]

    def _send_input(self, base: str, row: int) -> None:
        if not 0 <= row < len(self.images):
            raise MismatchError(f"the server asked for row {row}, this victim has rows 0..{len(self.images) - 1}")
        if row in self._clients:
            raise MismatchError(f"the server asked for row {row} a second time in one session; refused")
        prepared = self._take_prepared(row)
        if prepared is None:
            client = self._client_for_next_input()
            fields, parts, encrypt = self._encrypt(row, client)
        else:
            client, (fields, parts, encrypt) = prepared
        self.stats["encrypt_seconds"] += encrypt
        self._send_context(client)
        size = wire.message_size("input", client.context_id, parts, **fields)
        t1 = time.perf_counter()
        self._request("PUT", f"{base}/inputs/{row}", length=size, timeout=self.upload_timeout,
                      body=lambda: wire.pack_stream("input", client.context_id, parts, **fields))
        self._clients[row] = client
        self.stats["bytes_up"] += size
        self.stats["inputs_sent"] += 1
        self.stats["upload_seconds"] += time.perf_counter() - t1
        self.log(f"row {row} (index {self.declared['indices'][row]}): encrypted in {encrypt:.1f} s"
                 f"{' (ahead of time)' if prepared else ''}, {size / 1e6:.1f} MB sent and accepted in "
                 f"{time.perf_counter() - t1:.1f} s")
        del parts
        self._prefetch(row)

    def _answer(self, base: str, seq: int, row: int) -> None:
        client = self._clients.get(row)
        if client is None:
            raise MismatchError(f"the server sent a result for row {row}, which this session never sent; refused")
        message = self._request("GET", f"{base}/results/{seq}").content
        self.stats["bytes_down"] += len(message)
        t0 = time.perf_counter()
        try:
            reply = client.answer(message)
        except (MismatchError, ClientRefusal) as exc:  # the policy refuses: say so, then stop
            self._request("PUT", f"{base}/results/{seq}/refusal", json={"reason": str(exc)})
            raise
        finally:
            self.stats["decrypt_seconds"] += time.perf_counter() - t0
        self._request("PUT", f"{base}/results/{seq}/reply", body=lambda: reply, length=len(reply))
        self.stats["bytes_up"] += len(reply)
        self.stats["results_answered"] += 1
        self.stats["queries_answered"] += int(wire.read_header(message).get("count", 0))

    def close(self) -> None:
        self.http.close()


SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
FINAL_FIELDS = ("task", "reason", "rows", "queries_total", "evaluations_this_session", "fingerprint_sha256")


def _json(response: httpx.Response, what: str) -> dict:
    """A server's JSON object, or one line: a victim never acts on a message it has not checked."""
    try:
        value = response.json()
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise MismatchError(f"the server's {what} answer is not a JSON object; refused")
    return value


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail is not None else response.text
    return " ".join(text.split())[:300] or response.reason_phrase


def load_image_file(path: str | Path) -> torch.Tensor:
    """A victim's own images: a safetensors file with one float tensor ``images`` [n, C, H, W] in [0, 1]."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise InvalidValueError(f"image file {path} does not exist")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidValueError(f"image file {path} is not a safetensors file ({' '.join(str(exc).split())[:120]})") from None
    images = tensors.get("images")
    if images is None or not images.is_floating_point() or images.ndim != 4 or images.shape[0] == 0:
        raise InvalidValueError(f"image file {path} must hold a float tensor 'images' [n, C, H, W]")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise InvalidValueError(f"image file {path}: images must be finite and in [0, 1]")
    return images.float()
