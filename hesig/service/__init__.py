"""The encrypted oracle as a service: ``hesig serve`` (the model owner, who runs the attack) and
``hesig victim`` (the data owner, who holds the secret key), ciphertexts over HTTP.

Modules: protocol (paths, task kinds, the victim's declaration: what both sides agree on),
link (the mailbox between the server's HTTP handlers and its fingerprint thread), remote (the
server's view of a remote victim: an oracle channel), hub (sessions, jobs, limits), app (the
FastAPI application), victim (the victim process). The server side imports nothing that makes
or holds a secret key (tests/test_layout.py checks it).
"""
