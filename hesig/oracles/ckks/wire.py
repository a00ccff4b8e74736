"""The bytes that pass between client and server, in process or over the network.

A message is ``b"HSG1"`` + a 4-byte header length + a JSON header + binary parts. The header
names the message kind, the context it belongs to (``context_id``: SHA-256 of the serialized
public context) and the length of each part. A part is SEAL-serialized (ciphertexts, keys), a
seeded input ciphertext in hesig's packed form (seeded.py), or a TenSEAL-serialized context. A message of another context or kind is refused with one line.

Kinds: ``context`` (the client's public context: public key, relinearization keys, Galois keys
for the compact layout), ``input`` (one encrypted image; header: session, layout, shape),
``result`` (one ciphertext per model output; header: session, count = queries answered).
A reply is not a message: it is ``ceil(count / 8)`` bytes of packed bits (:func:`unpack_bits`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Iterator

import numpy as np

from ...core.errors import MismatchError

MAGIC = b"HSG1"
#: Largest JSON header accepted (a header holds a few fields and one length per part).
MAX_HEADER_BYTES = 1 << 20


def context_id(public_context: bytes) -> str:
    return hashlib.sha256(public_context).hexdigest()[:32]


def pack(kind: str, ctx_id: str, parts: list, **fields) -> bytes:
    return b"".join(pack_stream(kind, ctx_id, parts, **fields))


def pack_stream(kind: str, ctx_id: str, parts: list, **fields) -> Iterator[bytes]:
    """The message of :func:`pack` as a sequence of pieces (magic+header, then each part), so a
    sender can stream a large message without ever joining it into one buffer."""
    header = json.dumps({"kind": kind, "context_id": ctx_id, "parts": [len(p) for p in parts], **fields}).encode()
    yield MAGIC + struct.pack("<I", len(header)) + header
    yield from parts


def message_size(kind: str, ctx_id: str, parts: list, **fields) -> int:
    """len(pack(...)) without building the message."""
    return sum(len(p) for p in pack_stream(kind, ctx_id, parts, **fields))


def read_header(message) -> dict:
    """The JSON header of a message (bytes, memoryview or mmap), without checking the parts."""
    try:
        if bytes(message[:4]) != MAGIC:
            raise ValueError
        (hlen,) = struct.unpack_from("<I", message, 4)
        if hlen > MAX_HEADER_BYTES or 8 + hlen > len(message):
            raise ValueError
        header = json.loads(bytes(message[8:8 + hlen]))
        if not isinstance(header, dict):
            raise ValueError
        return header
    except (ValueError, TypeError, struct.error, UnicodeDecodeError):
        raise MismatchError("not a hesig CKKS message") from None


def unpack(message, kind: str, ctx_id: str | None) -> tuple[dict, list[memoryview]]:
    """Return (header, parts); refuse a message of another kind or context, or a truncated one.

    message: bytes, a memoryview or an mmap. The parts are zero-copy memoryviews into it (a
    batched input is ~374 MB: it is never held twice); ``bytes(part)`` where a copy is needed.
    """
    try:
        header = read_header(message)
        lengths = header["parts"]
        if not isinstance(lengths, list):
            raise TypeError
        (hlen,) = struct.unpack_from("<I", message, 4)
        offsets, pos = [], 8 + hlen
        for length in lengths:
            if type(length) is not int or length < 0:
                raise ValueError
            offsets.append((pos, pos + length))
            pos += length
        if pos != len(message):
            raise ValueError
    except (MismatchError, ValueError, KeyError, TypeError, struct.error):
        raise MismatchError(f"not a hesig CKKS message (expected a {kind} message)") from None
    if header.get("kind") != kind:
        raise MismatchError(f"expected a {kind} message, got {header.get('kind')}")
    if ctx_id is not None and header.get("context_id") != ctx_id:
        raise MismatchError(f"{kind} message was encrypted under another CKKS context "
                            f"({header.get('context_id')}, this server holds {ctx_id})")
    view = memoryview(message)
    return header, [view[a:b] for a, b in offsets]


def pack_bits(bits: np.ndarray) -> bytes:
    """A reply: bool [count] -> ceil(count / 8) bytes, most significant bit first."""
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes()


def unpack_bits(reply: bytes, count: int) -> np.ndarray:
    """bool [count] from a reply; refuses a reply of the wrong length."""
    if len(reply) != (count + 7) // 8:
        raise MismatchError(f"a reply to {count} queries is {(count + 7) // 8} bytes, got {len(reply)}")
    return np.unpackbits(np.frombuffer(reply, dtype=np.uint8), count=count).astype(bool)
