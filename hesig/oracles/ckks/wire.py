"""The bytes that pass between client and server, as over a network.

A message is ``b"HSG1"`` + a 4-byte header length + a JSON header + binary parts. The header
names the message kind, the context it belongs to (``context_id``: SHA-256 of the serialized
public context) and the length of each part. A part is SEAL-serialized (ciphertexts, keys) or
a TenSEAL-serialized context. A message of another context or kind is refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import struct

from ...core.errors import MismatchError

MAGIC = b"HSG1"


def context_id(public_context: bytes) -> str:
    return hashlib.sha256(public_context).hexdigest()[:32]


def pack(kind: str, ctx_id: str, parts: list[bytes], **fields) -> bytes:
    header = json.dumps({"kind": kind, "context_id": ctx_id, "parts": [len(p) for p in parts], **fields}).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *parts])


def unpack(message: bytes, kind: str, ctx_id: str | None) -> tuple[dict, list[bytes]]:
    """Return (header, parts); refuse a message of another kind or context, or a truncated one."""
    try:
        if message[:4] != MAGIC:
            raise ValueError
        (hlen,) = struct.unpack_from("<I", message, 4)
        header = json.loads(message[8:8 + hlen])
        offsets, pos = [], 8 + hlen
        for length in header["parts"]:
            offsets.append((pos, pos + int(length)))
            pos += int(length)
        if pos != len(message):
            raise ValueError
    except (ValueError, KeyError, TypeError, struct.error):
        raise MismatchError(f"not a hesig CKKS message (expected a {kind} message)") from None
    if header.get("kind") != kind:
        raise MismatchError(f"expected a {kind} message, got {header.get('kind')}")
    if ctx_id is not None and header.get("context_id") != ctx_id:
        raise MismatchError(f"{kind} message was encrypted under another CKKS context "
                            f"({header.get('context_id')}, this server holds {ctx_id})")
    view = memoryview(message)
    return header, [bytes(view[a:b]) for a, b in offsets]
