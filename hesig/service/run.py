"""Entry points of ``hesig serve`` and ``hesig victim`` (the CLI parses options and calls these)."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any

from ..core.defaults import CKKS_PROCESSES, PRIVATE_IMAGES
from ..core.errors import InvalidValueError
from ..core.io import atomic_write_text, canonical_json, tensor_hash


def require(*modules: str) -> None:
    """One line instead of an ImportError when the 'service' extra is not installed."""
    import importlib.util
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise InvalidValueError(f"this command needs {', '.join(missing)}: pip install 'hesig[service]'")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: str | Path | None) -> str | None:
    """A bearer token from a file (one line, 16..512 printable characters), never from argv."""
    if path is None:
        return None
    path = Path(path)
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidValueError(f"cannot read the token file {path} ({type(exc).__name__})") from None
    if not 16 <= len(token) <= 512 or not token.isprintable() or " " in token:
        raise InvalidValueError(f"the token file {path} must hold one token of 16..512 printable characters")
    return token


def serve(settings, host: str, port: int, port_file: str | Path | None = None) -> None:
    """Start the server (blocks until interrupted). Everything is checked before the port is bound."""
    require("fastapi", "uvicorn")
    import uvicorn

    from .app import create_app
    from .hub import Hub

    log = lambda message: print(f"hesig serve: {message}", file=sys.stderr, flush=True)  # noqa: E731
    hub = Hub(settings, log=log)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        raise InvalidValueError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    bound = sock.getsockname()[1]
    if not _loopback(host) and settings.token is None:
        log(f"warning: listening on {host} without a bearer token (--token-file): anyone who reaches it can open sessions")
    # timeout_graceful_shutdown: long polls and uploads in flight get 5 s, then the sessions end
    config = uvicorn.Config(create_app(hub), log_level="warning", access_log=False, lifespan="on",
                            timeout_keep_alive=30, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    url_host = f"[{host}]" if ":" in host else host
    log(f"listening on http://{url_host}:{bound} (model {hub.target.arch} {hub.target.hash}, "
        f"{hub.dirs.count} directions {hub.dirs.hash}, runs in {settings.runs})")
    if port_file is not None:
        atomic_write_text(port_file, f"{bound}\n")
    try:
        server.run(sockets=[sock])  # the app's lifespan ends the sessions when the server stops
    finally:
        sock.close()


def victim(server: str, *, dataset: str | None, split: str, indices: str | None, images_file: str | None,
           data_root=None, download: bool = False, policy: str | None, layout: str, token: str | None,
           state_dir: str | Path, retries: int, out: str | Path | None, log, prefetch: bool = True,
           processes: int = CKKS_PROCESSES) -> dict[str, Any]:
    """Run the victim against ``server`` until its job is done; return its summary."""
    require("httpx")
    from ..core.runtime import parse_indices
    from .victim import Victim, load_image_file

    if (dataset is None) == (images_file is None):
        raise InvalidValueError("give the victim's images with --dataset (and --split/--indices) or --images FILE")
    if images_file is not None:
        images = load_image_file(images_file)
        idx = parse_indices(indices, images.shape[0])
        declared = {"dataset": PRIVATE_IMAGES[0], "split": PRIVATE_IMAGES[1], "split_hash": tensor_hash(images)}
        images, positions = images[idx], [int(i) for i in idx.tolist()]
    else:
        from ..data import load_dataset
        data = load_dataset(dataset, split, data_root, download)
        idx = parse_indices(indices, len(data))
        declared = {"dataset": data.name, "split": data.split, "split_hash": data.split_hash}
        images, positions = data.images[idx], [int(i) for i in data.indices[idx].tolist()]
    declared["indices"] = positions
    key = hashlib.sha256(canonical_json({"server": server, **declared, "layout": layout}).encode()).hexdigest()[:16]
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    run = Victim(server, images, declared, policy=policy, layout=layout, token=token,
                 owner_file=state / f"{key}.key", retries=retries, prefetch=prefetch, log=log, processes=processes)
    try:
        summary = run.run()
    finally:
        run.close()
    if out is not None:
        atomic_write_text(out, canonical_json(summary) + "\n")
    return summary
