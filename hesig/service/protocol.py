"""What server and victim agree on: the HTTP paths, the task kinds and the victim's declaration.

The protocol (all paths under ``/v1``; bodies of wire messages are ``application/octet-stream``
in hesig's wire format, hesig.oracles.ckks.wire; every error is an HTTP 4xx with
``{"detail": "<one line>"}``; with a token, every request carries ``Authorization: Bearer <token>``):

1. ``GET /v1/info`` -> the model's public facts the victim needs to build a matching client
   (input shape, number of classes, first convolution's kernel and stride, CKKS parameters).
2. ``POST /v1/sessions`` with the declaration (JSON, :func:`parse_declaration`) -> 201
   ``{"session": id, "job": id, "rows": n}``. The job is named by the declaration and the
   victim's ``owner`` secret: the same victim re-opening it (after either side restarted)
   resumes it and ends its earlier session; nobody else can reach it.
3. ``PUT /v1/sessions/{id}/contexts`` with a ``context`` message (public key and evaluation keys
   only; a context with a secret key is refused) -> 201 ``{"context_id": ...}``.
4. Loop on ``GET /v1/sessions/{id}/task?wait=S`` (long poll, S <= 30) -> one of
     ``{"task": "input", "row": r, "index": i}``: upload row r (dataset index i) encrypted,
        ``PUT /v1/sessions/{id}/inputs/{r}`` with an ``input`` message whose session is r;
     ``{"task": "result", "seq": s, "row": r, "count": c, "bytes": b}``: download
        ``GET /v1/sessions/{id}/results/{s}`` (a ``result`` message), then reply
        ``PUT /v1/sessions/{id}/results/{s}/reply`` with ceil(c / 8) bytes of packed bits
        (bit q, most significant first: query q kept the victim's top-1 class), or refuse with
        ``PUT /v1/sessions/{id}/results/{s}/refusal`` and ``{"reason": "..."}``;
     ``{"task": "wait"}``: nothing yet, poll again;
     ``{"task": "done", ...}`` / ``{"task": "failed", "reason": ...}``: the job ended.
   A reply to a result that is not the pending one (replayed, out of order, of another session)
   is a 409 and changes nothing.
5. ``DELETE /v1/sessions/{id}`` ends a session early; ``GET /v1/sessions/{id}`` is its status.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.defaults import CKKS_LAYOUTS
from ..core.errors import InvalidValueError

API = "/v1"
TASKS = ("input", "result", "wait", "done", "failed")
MAX_POLL_S = 30.0
MAX_ROWS = 100_000
#: The owner secret: 32..128 URL-safe characters the victim generates and keeps.
OWNER = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:+-]{1,64}$")
_FIELDS = {"owner", "dataset", "split", "split_hash", "indices", "layout", "client_policy"}


def parse_declaration(obj: Any) -> dict[str, Any]:
    """Validate the victim's session declaration; return it normalised. One-line InvalidValueError.

    owner: the victim's secret job key (see OWNER); dataset / split / split_hash: what the victim
    says its images are (recorded in the fingerprint file, not verified: the server never sees
    the images); indices: the dataset positions of the images, in upload order (unique ints);
    layout: the CKKS layout of its inputs; client_policy: the policy spec it runs (recorded).
    """
    if not isinstance(obj, dict):
        raise InvalidValueError("the session declaration must be a JSON object")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise InvalidValueError(f"unknown field '{str(unknown[0])[:40]}' in the session declaration")
    missing = sorted(_FIELDS - set(obj) - {"client_policy"})
    if missing:
        raise InvalidValueError(f"the session declaration lacks '{missing[0]}'")
    if not isinstance(obj["owner"], str) or not OWNER.match(obj["owner"]):
        raise InvalidValueError("owner must be 32..128 URL-safe characters (the victim's secret job key)")
    for key in ("dataset", "split", "split_hash"):
        if not isinstance(obj[key], str) or not _NAME.match(obj[key]):
            raise InvalidValueError(f"{key} must be 1..64 characters of [A-Za-z0-9_.:+-]")
    indices = obj["indices"]
    if (not isinstance(indices, list) or not 1 <= len(indices) <= MAX_ROWS
            or any(type(i) is not int or not 0 <= i < 2 ** 31 for i in indices)):
        raise InvalidValueError(f"indices must be a list of 1..{MAX_ROWS} integers in [0, 2^31)")
    if len(set(indices)) != len(indices):
        raise InvalidValueError("indices must not repeat")
    if obj["layout"] not in CKKS_LAYOUTS:
        raise InvalidValueError(f"layout must be one of {', '.join(CKKS_LAYOUTS)}")
    policy = obj.get("client_policy", "unknown")
    if not isinstance(policy, str) or len(policy) > 200 or "\n" in policy:
        raise InvalidValueError("client_policy must be a one-line string of at most 200 characters")
    return {**obj, "client_policy": policy}


class RequestRefused(InvalidValueError):
    """A request the server refuses: ``status`` is its HTTP status (4xx), the message one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
