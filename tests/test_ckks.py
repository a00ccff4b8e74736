"""The CKKS oracle: client/server separation, decision agreement, bad input; each party split over
processes (hesig.oracles.ckks.parallel, helpers): the same bytes, the same refusals.

A small polynomial model (Conv2d 1->2 k4 s3 on 10x10 -> x^2 -> 18->8 -> x^2 -> 8->3) keeps each
homomorphic evaluation well under a second at the real parameters (N = 8192, 128-bit security).
"""

from __future__ import annotations

import os
import signal
from collections import OrderedDict

import numpy as np
import pytest
import tenseal as ts
import torch
from torch import nn

from hesig.core.errors import HesigError, InvalidValueError, MismatchError, QueryBudgetExhausted, ShapeError
from hesig.models.architectures import Square, lenet5
from hesig.oracles import PlaintextOracle
from hesig.oracles.ckks import CKKSClient, CKKSOracle, CKKSParameters, CKKSServer, poly_cnn
from hesig.oracles.ckks import rns, seeded, wire
from hesig.oracles.ckks.channel import make_server
from hesig.oracles.ckks.helpers import check_processes
from hesig.oracles.ckks.parallel import ParallelServer, server_pool
from hesig.oracles.ckks.server import shares
from hesig.oracles.ckks.wire import unpack_bits
from hesig.oracles.ckks.polymodel import im2col_slots
from hesig.oracles.ckks._seal import pid_bytes
from hesig.signature.prior_search import PriorGuidedSearch
from hesig.signature.search import BoundarySearch

SHAPE = (1, 10, 10)


def small_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 2, 4, stride=3)), ("act1", Square()), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(18, 8)), ("act2", Square()), ("fc2", nn.Linear(8, 3))])).double()


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def secrets():
    return torch.rand((2,) + SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def batched(model):
    client = CKKSClient(num_outputs=3, policy="strict")  # strict: one key serves several inputs here
    client.set_conv_geometry(4, 3)
    return client, CKKSServer(client.context_message(), poly_cnn(model, SHAPE))


def test_server_holds_only_a_public_context(batched):
    client, server = batched
    _, parts = wire.unpack(client.context_message(), "context", client.context_id)
    sent = ts.context_from(bytes(parts[0]))
    assert not sent.is_private() and not sent.has_secret_key()
    assert not server._ctx.is_private() and not server._ctx.has_secret_key()
    assert server.holds_secret_key is False
    assert not any(hasattr(server, name) for name in ("_decryptor", "secret_key"))


def test_server_refuses_a_context_with_a_secret_key(model):
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[31, 26, 26, 26, 26, 26, 26, 31])
    ctx.global_scale = 2 ** 26
    ctx.generate_relin_keys()
    private = ctx.serialize(save_secret_key=True)
    message = wire.pack("context", wire.context_id(private), [private], layout="batched")
    with pytest.raises(InvalidValueError, match="secret key"):
        CKKSServer(message, poly_cnn(model, SHAPE))


def test_results_decrypt_to_the_plaintext_logits(batched, model, secrets):
    client, server = batched
    session = server.open_session(client.encrypt(secrets[0].numpy(), session=0))
    pert = np.random.default_rng(0).normal(0, 0.3, (50,) + SHAPE)
    result = server.evaluate(session, pert)
    logits = client.decrypt_logits(result)
    want = poly_cnn(model, SHAPE).forward(secrets[0].double().numpy()[None] + pert)
    assert logits.shape == want.shape == (50, 3)
    assert np.abs(logits - want).max() < 1e-3 * max(1.0, np.abs(want).max())
    bits = unpack_bits(client.answer(result), 50)
    reference = poly_cnn(model, SHAPE).forward(secrets[0].double().numpy()[None]).argmax(1)
    assert np.array_equal(bits, want.argmax(1) == reference)


@pytest.mark.parametrize("primes", [(31, 24, 24, 24, 24, 24, 24, 31), (31, 30, 30, 30, 30, 30, 30, 31)])
def test_other_scales_keep_the_logits(model, secrets, primes):
    """The server encodes its weights at the rescaling primes' scale: with 24- or 30-bit primes
    (a fixed 2^26 would move the scale 2^2 or 2^4 per layer) the logits still decrypt."""
    n = 8192 if primes[1] == 24 else 16384  # 2^30 fits 128-bit security only at N = 16384
    client = CKKSClient(CKKSParameters(n, primes, primes[1]), num_outputs=3, policy="strict")
    client.set_conv_geometry(4, 3)
    server = CKKSServer(client.context_message(), poly_cnn(model, SHAPE))
    assert server.weight_scale == 2.0 ** primes[1]
    pert = np.random.default_rng(0).normal(0, 0.3, (20,) + SHAPE)
    logits = client.decrypt_logits(server.evaluate(server.open_session(client.encrypt(secrets[0].numpy(), session=0)), pert))
    want = poly_cnn(model, SHAPE).forward(secrets[0].double().numpy()[None] + pert)
    assert np.abs(logits - want).max() < 1e-2 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("layout,encryption", [("batched", "seeded"), ("compact", "seeded"), ("batched", "public-key")])
def test_decision_agreement_near_the_boundary(model, secrets, layout, encryption):
    """Queries within +-5% of the plaintext boundary: CKKS bits equal plaintext bits."""
    plain = PlaintextOracle(model.float(), secrets, device="cpu")
    model.double()
    dirs = torch.randn((12,) + SHAPE, generator=torch.Generator().manual_seed(2))
    dirs /= dirs.flatten(1).norm(dim=1)[:, None, None, None]
    fine = BoundarySearch(30.0, rtol=1e-6).run(plain, dirs)
    assert (~fine.censored).sum() >= 10
    rows, pert = [], []
    rng = np.random.default_rng(3)
    for r in range(2):
        for d in np.flatnonzero(~fine.censored[r].numpy()):
            for u in rng.uniform(0.95, 1.05, 40):
                rows.append(r)
                pert.append(dirs[d] * float(fine.eps[r, d]) * float(u))
    rows, pert = torch.tensor(rows), torch.stack(pert)
    ck = CKKSOracle(model, secrets, in_shape=SHAPE, layout=layout, encryption=encryption)
    got = ck.same_label(pert, rows)
    want = plain.same_label(pert, rows)
    assert (got == want).float().mean() >= 0.99
    assert ck.costs()["evaluations"] == 2 and ck.queries == len(rows)


def test_ckks_search_matches_plaintext_search(model, secrets):
    plain = PlaintextOracle(model.float(), secrets[:1], device="cpu")
    model.double()
    dirs = torch.randn((6,) + SHAPE, generator=torch.Generator().manual_seed(4))
    dirs /= dirs.flatten(1).norm(dim=1)[:, None, None, None]
    search = BoundarySearch(30.0, coarse_points=16, points_per_round="auto", rtol=1e-3)
    want = search.run(plain, dirs)
    got = search.run(CKKSOracle(model, secrets[:1], in_shape=SHAPE, client_policy="strict"), dirs)  # many replies per key
    assert torch.equal(got.censored, want.censored)
    ok = ~want.censored
    assert ((got.eps - want.eps).abs()[ok] <= 1e-3 * want.eps[ok]).all()


def test_ckks_prior_search_matches_plaintext_prior_search(model, secrets):
    """The prior-guided search over CKKS: m = 2 queries per pair, the same brackets as in plaintext
    except where a pair's ε lies within the CKKS noise of a knot (none here: knots sit between the
    owner's ε values, which differ from the victim's)."""
    model.double()
    dirs = torch.randn((6,) + SHAPE, generator=torch.Generator().manual_seed(5))
    dirs /= dirs.flatten(1).norm(dim=1)[:, None, None, None]
    owner = torch.rand((8,) + SHAPE, generator=torch.Generator().manual_seed(6))
    fine = BoundarySearch(30.0, coarse_points=16, rtol=1e-4)
    owned = fine.run(PlaintextOracle(model.float(), owner, device="cpu"), dirs)
    eps = torch.where(owned.censored, torch.full_like(owned.eps, 30.0), owned.eps).double()
    knots = torch.quantile(eps, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0,
                           interpolation="higher").T
    search = PriorGuidedSearch(knots, 30.0, {"split": "train"})
    want = search.run(PlaintextOracle(model.float(), secrets[:1], device="cpu"), dirs)
    model.double()
    ck = CKKSOracle(model, secrets[:1], in_shape=SHAPE, client_policy="strict")
    got = search.run(ck, dirs)
    truth = fine.run(PlaintextOracle(model.float(), secrets[:1], device="cpu"), dirs).eps.double()
    model.double()
    near = ((knots - truth.T).abs() <= 1e-3 * knots).any(1)  # a knot within the CKKS noise of ε
    assert not near.all(), "the test needs pairs away from every knot"
    far = ~near[None, :]
    assert torch.equal(got.censored[far], want.censored[far])
    assert torch.equal(got.eps[far], want.eps[far]) and torch.equal(got.eps_lo[far], want.eps_lo[far])
    assert (got.queries == 2).all() and ck.queries == 2 * dirs.shape[0]


def test_ciphertexts_of_another_context_are_refused(batched, model, secrets):
    client, server = batched
    other = CKKSClient()
    with pytest.raises(MismatchError, match="another CKKS context"):
        server.open_session(other.encrypt(secrets[0].numpy(), session=0))
    # Same parameters, forged context id: caught as malformed only if the bytes are not a ciphertext.
    message = client.encrypt(secrets[0].numpy(), session=5)  # a strict client never reuses a session id
    header, parts = wire.unpack(message, "input", client.context_id)
    parts[3] = parts[3][:100]
    bad = wire.pack("input", client.context_id, parts, **{k: v for k, v in header.items() if k not in ("kind", "context_id", "parts")})
    with pytest.raises(MismatchError, match="not a SEAL CKKS ciphertext"):
        server.open_session(bad)
    with pytest.raises(MismatchError, match="not a hesig CKKS message"):
        server.open_session(b"garbage")


def test_wrong_shapes_and_values(batched, secrets):
    client, server = batched
    with pytest.raises(ShapeError):
        client.encrypt(np.zeros((10, 10)), session=0)
    with pytest.raises(InvalidValueError):
        client.encrypt(np.full(SHAPE, np.nan), session=0)
    session = server.open_session(client.encrypt(secrets[1].numpy(), session=1))
    with pytest.raises(ShapeError):
        server.evaluate(session, np.zeros((3, 1, 9, 9)))
    with pytest.raises(ShapeError):
        server.evaluate(session, np.zeros((server.slots,) + SHAPE))
    with pytest.raises(InvalidValueError):
        server.evaluate(session, np.full((2,) + SHAPE, np.inf))
    with pytest.raises(ShapeError, match="shape"):
        server.open_session(client.encrypt(np.zeros((1, 12, 12)), session=2))


def test_a_model_deeper_than_the_parameters_is_refused(model):
    shallow = CKKSParameters(8192, (40, 40, 40, 40), 26)
    with pytest.raises(InvalidValueError, match="scale out of bounds"):
        shallow.check_depth(poly_cnn(model, SHAPE).depth, "small")
    client = CKKSClient(shallow)
    with pytest.raises(InvalidValueError, match="scale out of bounds"):
        CKKSServer(client.context_message(), poly_cnn(model, SHAPE))


def test_parameters_are_validated():
    with pytest.raises(InvalidValueError, match="128-bit"):
        CKKSParameters(8192, (60, 60, 60, 60))
    with pytest.raises(InvalidValueError):
        CKKSParameters(1000)
    assert CKKSParameters().describe(5)["result_bits"] == 57


def test_non_polynomial_models_are_refused():
    with pytest.raises(InvalidValueError, match="lenet5"):
        poly_cnn(lenet5(), (1, 28, 28), "lenet5")


def test_budget_is_enforced_before_encryption(model, secrets):
    ck = CKKSOracle(model, secrets, in_shape=SHAPE, budget=5)
    with pytest.raises(QueryBudgetExhausted):
        ck.same_label(torch.zeros((6,) + SHAPE), torch.zeros(6, dtype=torch.long))
    assert ck.costs()["evaluations"] == 0
    with pytest.raises(ShapeError):
        ck.session(2)  # two secrets: rows 0 and 1
    assert ck.costs()["upload_bytes"] == 0  # nothing was encrypted for the refused row


def test_exact_modular_linear_combination():
    rng = np.random.default_rng(0)
    moduli = np.array([2147352577, 67043329], dtype=np.uint64)  # 31- and 26-bit primes
    x = np.stack([rng.integers(0, int(q), size=(300, 2, 16), dtype=np.uint64) for q in moduli], axis=2)
    w = rng.integers(-(1 << 30), 1 << 30, size=(5, 300))
    got = rns.lincomb(w, x, moduli)
    assert np.array_equal(rns.lincomb(w, [row.astype(np.uint32) for row in x], moduli), got)  # a list, no stacked copy
    halves = rns.lincomb(w[:, 150:], x[150:], moduli, into=rns.lincomb(w[:, :150], x[:150], moduli))
    assert np.array_equal(halves, got)  # blocks summed into one output mod q (the evaluation's fc1 blocks)
    for lvl, q in enumerate(int(m) for m in moduli):
        for o in range(5):
            want = [sum(int(w[o, f]) * int(x[f, s, lvl, i]) for f in range(300)) % q for s in range(2) for i in range(16)]
            assert got[o, :, lvl, :].reshape(-1).tolist() == want
    # extremes: every coefficient q - 1 and weights at +-q/2, q - 1, -(q - 1), 2^62, where the float
    # reduction's rounded quotient is off by one and the sums are at their largest
    top = np.broadcast_to((moduli - np.uint64(1))[None, None, :, None], (300, 2, 2, 16)).copy()
    edge = np.array([[int(moduli[0]) // 2, -(int(moduli[0]) // 2), int(moduli[0]) - 1, 1 - int(moduli[0]), 1 << 62, -(1 << 62)]])
    w_edge = np.resize(edge, (3, 300))
    got = rns.lincomb(w_edge, top, moduli)
    for lvl, q in enumerate(int(m) for m in moduli):
        for o in range(3):
            assert set(got[o, :, lvl, :].reshape(-1).tolist()) == {sum(int(w_edge[o, f]) * (q - 1) for f in range(300)) % q}


def test_float_reduction_is_exact_next_to_multiples_of_q():
    """lincomb reduces float64 integers by p - floor(p / q) q; next to a multiple of q the rounded
    quotient can be one too small, and the correction must bring the result into [0, q)."""
    rng = np.random.default_rng(2)
    for q in (67043329, 2147352577):
        k = rng.integers(1, (1 << 52) // q, 20000)
        offsets = np.array([-3, -2, -1, 0, 1, 2, 3, q - 1, 1 - q])
        exact = [int(a) * q + int(b) for a in k for b in offsets]
        values = np.array(exact, dtype=np.float64)
        assert all(int(v) == e for v, e in zip(values, exact))  # every test value is exact in float64
        rns._reduce(values, float(q), np.empty_like(values), np.empty(values.shape, dtype=bool))
        assert values.astype(np.int64).tolist() == [e % q for e in exact]
    # where the rounded quotient is one too small (found by search; any modulus below 2^31 will do)
    for q, value in ((412879442, 3241911624767994), (1462522645, -2980511461311625)):
        values = np.array([float(value)])
        rns._reduce(values, float(q), np.empty_like(values), np.empty(1, dtype=bool))
        assert int(values[0]) == value % q


def test_seal_square_is_the_tensor_square_and_fc1_reads_uint32(batched, secrets):
    """The server squares each perturbed feature in SEAL and sums fc1 in numpy from uint32
    coefficients (memory): SEAL's square is the tensor square (c0^2, 2 c0 c1, c1^2) mod q, and
    lincomb gives the same integers from uint32 as from uint64."""
    import tenseal.sealapi as sa
    from hesig.oracles.ckks import _seal

    client, server = batched
    session = server.open_session(client.encrypt(secrets[0].numpy(), session=60))
    client.forget(60)
    ct = server._feature(session, 3)
    before = _seal.ciphertext_data(ct)
    squared = sa.Ciphertext()
    server._eval.square(ct, squared)
    after = _seal.ciphertext_data(squared)
    q = server._moduli[pid_bytes(ct.parms_id())][:, None]
    c0, c1 = before[0], before[1]
    assert np.array_equal(after, np.stack([c0 * c0 % q, c0 * c1 % q * np.uint64(2) % q, c1 * c1 % q]))
    weights = np.random.default_rng(6).integers(-(1 << 30), 1 << 30, size=(4, 2))
    stack = np.stack([after, after[::-1]])
    assert np.array_equal(rns.lincomb(weights, stack.astype(np.uint32), q[:, 0]), rns.lincomb(weights, stack, q[:, 0]))


def test_fc2_in_numpy_rounds_weights_as_seal_encodes_them(batched):
    """fc2 runs as an exact modular product in numpy: its integer weights must be the constants
    SEAL's encoder makes of each weight (std::round, half away from zero), so the result bytes are
    those of SEAL's multiply_plain path, also at exact .5 ties (common for float32 weights)."""
    import tenseal.sealapi as sa
    from hesig.oracles.ckks.server import seal_integers
    _, server = batched
    plain = sa.Plaintext()
    q = int(server._moduli[server._first][0])
    ties = (np.arange(-6, 6) + 0.5) / server.weight_scale  # exactly k + 0.5 once scaled
    weights = np.concatenate([server.model.fc2_weight.reshape(-1), ties])
    got = seal_integers(weights, server.weight_scale)
    for w, want in zip(weights, got):
        server._encoder.encode(float(w), server.weight_scale, plain)
        assert int(plain.data(0)) == int(want) % q, w
    assert not np.array_equal(got[-12:], np.rint(ties * server.weight_scale))  # rint would not do
    assert np.array_equal(server._fc2, seal_integers(server.model.fc2_weight, server.weight_scale))


def test_im2col_layout_matches_tenseal():
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[31, 26, 26, 26, 26, 26, 26, 31])
    ctx.global_scale = 2 ** 26
    image = np.arange(784, dtype=float).reshape(28, 28)
    enc, windows = ts.im2col_encoding(ctx, image.tolist(), 7, 7, 3)
    slots = im2col_slots((1, 28, 28), 7, 3)
    decrypted = np.rint(np.array(enc.decrypt())).astype(int)
    assert windows == 64 and np.array_equal(decrypted[:len(slots)], slots)


def test_seeded_encryption_halves_the_bytes_and_keeps_the_logits(model, secrets):
    """Seeded symmetric encryption (the default) against hesig's original public-key path: the
    same logits, about half the upload and a smaller context (seeded relinearization keys)."""
    poly = poly_cnn(model, SHAPE)
    pert = np.random.default_rng(4).normal(0, 0.3, (30,) + SHAPE)
    want = poly.forward(secrets[0].double().numpy()[None] + pert)
    sizes = {}
    for encryption in ("seeded", "public-key"):
        client = CKKSClient(num_outputs=3, policy="strict", encryption=encryption)
        server = CKKSServer(client.context_message(), poly)
        message = client.encrypt(secrets[0].numpy(), session=0)
        logits = client.decrypt_logits(server.evaluate(server.open_session(message), pert))
        assert np.abs(logits - want).max() < 1e-3 * max(1.0, np.abs(want).max()), encryption
        sizes[encryption] = (len(message), len(client.context_message()))
    assert sizes["seeded"][0] < 0.55 * sizes["public-key"][0]
    assert sizes["seeded"][1] < 0.7 * sizes["public-key"][1]


def test_zero_copy_read_equals_seal_serialization(batched, secrets, monkeypatch):
    from hesig.oracles.ckks import _seal
    import tenseal.sealapi as sa

    client, server = batched
    ct = server._scratch.load(sa.Ciphertext(), server._seal, seeded.to_seal(wire.unpack(
        client.encrypt(secrets[1].numpy(), session=7), "input", client.context_id)[1][0]))
    client.forget(7)
    fast = _seal.ciphertext_data(ct)
    assert fast is not None and fast.dtype == np.uint64
    assert np.array_equal(fast, rns.parse(server._scratch.save(ct)).data)
    monkeypatch.setattr(_seal, "ZERO_COPY", False)
    assert _seal.ciphertext_data(ct) is None  # the benchmark's baseline: SEAL's serialization


def test_a_session_keeps_its_features_as_uint32_and_evaluates_as_if_they_were_seals(batched, secrets, monkeypatch):
    """Features are kept as uint32 coefficients (half of SEAL's buffer, outside its memory pool) and
    written into one scratch ciphertext per use; the result bytes equal those of a session that
    keeps SEAL ciphertexts (the path taken where buffers cannot be read in place)."""
    from hesig.oracles.ckks import _seal

    client, server = batched
    message = client.encrypt(secrets[1].numpy(), session=61)
    kept = server.open_session(message)
    assert all(f.data.dtype == np.uint32 and f.data.shape == kept.features[0].data.shape for f in kept.features)
    written = server._feature(kept, 5)
    assert written is server._feature(kept, 6)  # one staged SEAL ciphertext, rewritten per feature
    written = server._feature(kept, 5)
    assert written in kept.staged.values() and np.array_equal(_seal.ciphertext_data(written), kept.features[5].data)
    assert not _seal.write_ciphertext_data(written, kept.features[5].data[:1])  # another shape: refused, untouched
    assert np.array_equal(_seal.ciphertext_data(written), kept.features[5].data)
    pert = np.random.default_rng(9).normal(scale=0.3, size=(40,) + tuple(server.model.in_shape))
    loads = []
    monkeypatch.setattr(server, "_to_seal", lambda ct, load=server._to_seal: loads.append(1) or load(ct))
    fast = server.evaluate(kept, pert)
    # one load through SEAL's serialization for the fc1 units and one for the logits; every other
    # ciphertext of the server's own is written in place into those (CKKSServer._stage)
    assert len(loads) == 2 < server._fc1.shape[0]
    monkeypatch.setattr(_seal, "ZERO_COPY", False)
    sealed = server.open_session(message)
    assert all(not isinstance(f, rns.RnsCiphertext) for f in sealed.features)
    slow = server.evaluate(sealed, pert)
    client.forget(61)
    assert wire.unpack(fast, "result", client.context_id)[1] == wire.unpack(slow, "result", client.context_id)[1]


@pytest.mark.parametrize("change, error", [
    ({"encryption": "rot13"}, "unknown encryption"),
    ({"drop_keys": True}, "carries 2 parts"),
])
def test_server_refuses_a_malformed_seeded_context(model, change, error):
    client = CKKSClient(num_outputs=3, policy="strict")
    header, parts = wire.unpack(client.context_message(), "context", client.context_id)
    fields = {k: v for k, v in header.items() if k not in ("kind", "context_id", "parts")}
    if change.get("drop_keys"):
        parts = parts[:1]
    fields["encryption"] = change.get("encryption", fields["encryption"])
    with pytest.raises((InvalidValueError, MismatchError), match=error) as err:
        CKKSServer(wire.pack("context", client.context_id, parts, **fields), poly_cnn(model, SHAPE))
    assert "\n" not in str(err.value)


# -- each party over several processes ------------------------------------------------------

@pytest.fixture(scope="module")
def poly():
    return poly_cnn(small_model(), SHAPE)


@pytest.fixture(scope="module")
def split_client():
    client = CKKSClient(num_outputs=3, policy="strict")
    client.set_conv_geometry(4, 3)
    return client


@pytest.fixture(scope="module")
def secret():
    return np.random.default_rng(1).random(SHAPE)


@pytest.mark.parametrize("processes", [2, 3])
def test_a_split_server_returns_the_bytes_of_one_process(poly, split_client, secret, processes):
    """Every sum across processes is exact modular arithmetic: byte-identical result messages."""
    message = split_client.encrypt(secret, session=processes)
    pert = np.random.default_rng(processes).normal(0, 0.3, (40,) + SHAPE)
    one = CKKSServer(split_client.context_message(), poly)
    split = make_server(split_client.context_message(), poly, processes)
    assert isinstance(split, ParallelServer) and split.holds_secret_key is False
    want = one.evaluate(one.open_session(message), pert)
    session = split.open_session(message)
    assert split.evaluate(session, pert) == want
    assert split.evaluate(session, pert[:7]) == one.evaluate(one.open_session(message), pert[:7])
    logits = split_client.decrypt_logits(want)
    expected = poly.forward(secret[None] + pert)
    assert np.abs(logits - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())
    pool = server_pool(processes)
    assert pool.alive() and len(pool.pids()) == processes - 1


def test_a_helper_refuses_a_bad_pixel_in_one_line_and_lives_on(poly, split_client, secret):
    """A malformed ciphertext that only a helper parses (the last pixel belongs to the last share)
    is refused with the one-process server's error, raised in the caller; the pool keeps working."""
    server = make_server(split_client.context_message(), poly, 2)
    message = split_client.encrypt(secret, session=10)
    header, parts = wire.unpack(message, "input", split_client.context_id)
    last = len(parts) - 1
    assert last in {int(p) for w in shares(poly, 2)[1].windows for p in poly.windows()[w][0]}
    parts[last] = parts[last][:100]
    bad = wire.pack("input", split_client.context_id, parts,
                    **{k: v for k, v in header.items() if k not in ("kind", "context_id", "parts")})
    with pytest.raises(MismatchError, match="not a SEAL CKKS ciphertext"):
        server.open_session(bad)
    with pytest.raises(MismatchError, match="not a hesig CKKS message"):
        server.open_session(b"garbage")
    session = server.open_session(message)
    pert = np.zeros((3,) + SHAPE)
    assert split_client.decrypt_logits(server.evaluate(session, pert)).shape == (3, 3)


def test_shares_split_every_feature_and_unit_once(poly):
    for count in (1, 2, 3, 8):
        parts = shares(poly, count)
        features = np.concatenate([s.features for s in parts])
        units = np.concatenate([s.units for s in parts])
        assert sorted(features.tolist()) == list(range(poly.num_features))
        assert sorted(units.tolist()) == list(range(poly.fc1_weight.shape[0]))
    with pytest.raises(InvalidValueError, match="splits 1..8 ways"):  # 9 output positions, 8 fc1 units
        shares(poly, 9)


@pytest.mark.parametrize("bad", [0, -1, 65, 1.5, True, "2"])
def test_server_processes_are_validated(bad):
    with pytest.raises(InvalidValueError, match="CKKS processes"):
        check_processes(bad)


def test_two_split_servers_of_one_context_do_not_free_each_other(poly, split_client, secret):
    """Dropping an old server of a context (its finalizer tells the helpers) leaves a newer server
    of the same context working: helpers name servers by the caller's key, not the context id."""
    import gc
    old = make_server(split_client.context_message(), poly, 2)
    new = make_server(split_client.context_message(), poly, 2)
    del old
    gc.collect()
    session = new.open_session(split_client.encrypt(secret, session=30))
    assert split_client.decrypt_logits(new.evaluate(session, np.zeros((2,) + SHAPE))).shape == (2, 3)


def test_a_dead_helper_is_one_line_and_the_next_server_starts_afresh(poly, split_client, secret):
    server = make_server(split_client.context_message(), poly, 2)
    session = server.open_session(split_client.encrypt(secret, session=20))
    pool = server_pool(2)
    os.kill(pool.pids()[0], signal.SIGKILL)
    pool._procs[0].wait(timeout=10)
    with pytest.raises(HesigError, match="helper"):
        server.evaluate(session, np.zeros((2,) + SHAPE))
    fresh = make_server(split_client.context_message(), poly, 2)
    assert server_pool(2) is not pool and server_pool(2).alive()
    pert = np.zeros((2,) + SHAPE)
    assert split_client.decrypt_logits(fresh.evaluate(fresh.open_session(split_client.encrypt(secret, session=21)), pert)).shape == (2, 3)


@pytest.mark.parametrize("encryption", ["seeded", "public-key"])
def test_a_split_client_encrypts_what_one_process_encrypts(poly, secret, encryption):
    """The client's helpers encrypt under the client's own key: the server opens the message and
    the logits decrypt to the plaintext ones (so the parts come back in pixel order)."""
    client = CKKSClient(num_outputs=3, policy="strict", encryption=encryption, processes=3)
    message = client.encrypt(secret, session=0)
    header, parts = wire.unpack(message, "input", client.context_id)
    assert len(parts) == poly.num_pixels and header["shape"] == list(SHAPE)
    server = make_server(client.context_message(), poly, 2)
    pert = np.random.default_rng(5).normal(0, 0.3, (20,) + SHAPE)
    logits = client.decrypt_logits(server.evaluate(server.open_session(message), pert))
    expected = poly.forward(secret[None] + pert)
    assert np.abs(logits - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())


def test_the_oracle_with_two_processes_matches_the_plaintext_search():
    model = small_model()
    secrets = torch.rand((2,) + SHAPE, generator=torch.Generator().manual_seed(1))
    dirs = torch.nn.functional.normalize(torch.randn(12, *SHAPE, generator=torch.Generator().manual_seed(2)).flatten(1), dim=1)
    dirs = dirs.reshape(12, *SHAPE)
    search = BoundarySearch(30.0, coarse_points=8, points_per_round="auto", rtol=1e-2)
    plain = search.run(PlaintextOracle(model.float(), secrets, device="cpu"), dirs)
    oracle = CKKSOracle(model.double(), secrets, in_shape=SHAPE, arch="small", client_policy="strict", processes=2)
    ckks = search.run(oracle, dirs)
    assert torch.equal(plain.censored, ckks.censored)
    assert torch.allclose(plain.eps, ckks.eps, rtol=2e-2)
    with pytest.raises(InvalidValueError, match="CKKS processes"):
        CKKSOracle(model, secrets, in_shape=SHAPE, arch="small", processes=0)


def test_helper_replies_are_data_never_pickles():
    """A helper parses the other party's ciphertexts, so its replies are JSON or raw arrays; anything
    else is refused in one line, and a helper's error comes back as the same class."""
    from multiprocessing import Pipe
    from hesig.oracles.ckks.helpers import expect, recv_array, reply, reply_error
    import pickle
    mine, theirs = Pipe()
    theirs.send_bytes(pickle.dumps(("ok",)))
    with pytest.raises(HesigError, match="malformed reply"):
        expect(mine)
    reply_error(theirs, MismatchError("input is not a SEAL CKKS ciphertext of this context"))
    with pytest.raises(MismatchError, match="not a SEAL CKKS ciphertext"):
        recv_array(mine, np.uint64, (2, 3))
    theirs.send_bytes(b"\0" * 8)
    with pytest.raises(HesigError, match="malformed reply"):
        recv_array(mine, np.uint64, (2, 3))
    theirs.send_bytes(np.arange(6, dtype=np.uint64).tobytes())
    assert recv_array(mine, np.uint64, (2, 3)).tolist() == [[0, 1, 2], [3, 4, 5]]
    reply(theirs, {"ok": True})
    assert expect(mine) == {"ok": True}


def test_packed_seeded_ciphertexts_are_seals_own_and_smaller(batched, monkeypatch):
    """The packed wire form (seeded.py) carries the same ciphertext as SEAL's zstd serialization:
    SEAL loads both to the same coefficients (c0 and the expanded c1), and it is smaller."""
    from hesig.oracles.ckks import _seal
    from hesig.oracles.ckks.client import _encrypt
    import tenseal.sealapi as sa

    client, server = batched
    plain = sa.Plaintext()
    client._encoder.encode(0.3712, client.params.scale, plain)
    serializable = client._encryptor.encrypt_symmetric(plain)
    packed = seeded.pack(serializable, client._seeded_shape, plain.scale)
    own = client._scratch.save(serializable)  # SEAL's zstd form of the same object
    assert packed is not None and seeded.is_packed(packed) and not seeded.is_packed(own)
    assert len(packed) < len(own)
    a = server._scratch.load(sa.Ciphertext(), server._seal, seeded.to_seal(packed))
    b = server._scratch.load(sa.Ciphertext(), server._seal, own)
    assert np.array_equal(_seal.ciphertext_data(a), _seal.ciphertext_data(b))
    # a shape that does not match the object is refused, and the caller falls back to SEAL's form
    wrong = seeded.SeededShape(client._seeded_shape.parms_id, client._seeded_shape.n, client._seeded_shape.levels - 1,
                               client._seeded_shape.version)
    assert seeded.pack(serializable, wrong, plain.scale) is None
    assert seeded.pack(serializable, client._seeded_shape, plain.scale * 2) is None
    monkeypatch.setattr(_seal, "PACKED_SEEDS", False)  # the benchmark's previous path
    assert not seeded.is_packed(_encrypt(client._encryptor, client._scratch, plain, "seeded", client._seeded_shape))


@pytest.mark.parametrize("tamper, error", [
    (lambda b: b[:60], "packed seeded form: truncated header"),
    (lambda b: b[:-1], "packed seeded form: 229541 bytes, the header says 229542"),
    (lambda b: b + b"x", "the header says"),
    (lambda b: b[:4] + b"\x04\x03\x01\x00" + b[8:], "packed seeded form: bad header"),
    (lambda b: b[:48] + (1 << 40).to_bytes(8, "little") + b[56:], "packed seeded form: out-of-range sizes"),
    (lambda b: b[:101] + b"\xff\xff\xff\xff" + b[105:], "input is not a SEAL CKKS ciphertext of this context"),  # c0[0] >= q
    (lambda b: b[:-81] + b"\x00" * 81, "input is not a SEAL CKKS ciphertext of this context"),  # no seed record
])
def test_malformed_packed_inputs_are_refused_in_one_line(batched, secrets, tamper, error):
    client, server = batched
    message = client.encrypt(secrets[0].numpy(), session=40)
    client.forget(40)
    header, parts = wire.unpack(message, "input", client.context_id)
    assert all(seeded.is_packed(p) and len(p) == 229542 for p in parts)
    parts[5] = tamper(bytes(parts[5]))
    bad = wire.pack("input", client.context_id, parts, **{k: v for k, v in header.items() if k not in ("kind", "context_id", "parts")})
    with pytest.raises(MismatchError, match=error):
        server.open_session(bad)
