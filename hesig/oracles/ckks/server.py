"""The model owner's side: a public CKKS context, hecnn's weights, the attacker's perturbations.

Per image (a *session*) the server turns the client's ciphertexts into 256 conv1-feature
ciphertexts C_f = Enc(conv1(X)_f), each replicated over every slot. Per evaluation it adds the
perturbations and runs the rest of hecnn homomorphically; slot j answers query j.

Where the perturbation enters: the server adds plaintext N_j to the encrypted input *through*
conv1, i.e. computes Enc(conv1(X))_f + (W * N_j)_f. conv1 is affine, so this is exactly
Enc(conv1(X + N_j))_f, the same function as adding N_j to every pixel ciphertext first; it saves
784 plaintext encodings per evaluation. Decision agreement with the plaintext oracle is measured
in benchmarks/ckks.py.

Levels (N = 8192, primes [31, 26 x 6, 31], scale 2^26; weights at the primes' size, see
:func:`weight_scale`): conv1 -> rescale (6 primes left),
x^2 and fc1 in numpy on the NTT coefficients, two rescales (4), x^2 (3), fc2 (2): the logits
decrypt at a 57-bit modulus over a 26-bit scale.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import tenseal as ts
import tenseal.sealapi as sa

from ...core.defaults import CKKS_ENCRYPTIONS, CKKS_LAYOUTS
from ...core.errors import InvalidValueError, MismatchError, ShapeError
from . import rns, seeded, wire
from ._seal import Scratch, ciphertext_data, moduli_by_parms, pid_bytes, trim_heap, write_ciphertext_data
from .polymodel import PolyCNN

#: features per block of fc1 in an evaluation (memory: see fc1_partial)
FC1_BLOCK = 128


def weight_scale(first_moduli: list[int]) -> float:
    """The scale the server encodes plaintext weights at: the power of two nearest the rescaling
    primes (2^26 for the default [31, 26 x 6, 31]). Each multiply-then-rescale then leaves the
    ciphertext's scale where it was; a fixed 2^26 with 22- or 30-bit primes would move it by 2^4
    per layer until the logits overflow or drown in noise. first_moduli: the data primes of the
    first level, in order (the last one is rescaled away first)."""
    return float(2 ** round(math.log2(int(first_moduli[-1]))))


def seal_integers(values: np.ndarray, scale: float) -> np.ndarray:
    """int64 round(values * scale), rounded half away from zero as SEAL's CKKSEncoder rounds a
    scalar (std::round): float32 weights times 2^26 often end in exactly .5, where np.rint would
    round to even and the numpy product would differ from SEAL's multiply_plain."""
    scaled = np.asarray(values, dtype=np.float64) * scale
    return (np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)).astype(np.int64)


def result_format(first_moduli: list[int], input_scale: float) -> float:
    """The scale of every logit ciphertext the server returns (public: it follows from the
    parameters and the protocol). first_moduli: the data primes of the first level, in order."""
    w, p = weight_scale(first_moduli), [float(q) for q in first_moduli]
    f = input_scale * w / p[-1]            # conv1, rescale
    h = f * f * w / p[-2] / p[-3]          # x^2 and fc1, two rescales
    return h * h * w / p[-4] / p[-5]      # x^2 and fc2 (size 3), relinearize, two rescales


class Session:
    """One encrypted secret image on the server: its conv1-feature ciphertexts (None where another
    server process of a :class:`hesig.oracles.ckks.parallel.ParallelServer` holds the feature).

    A feature is kept as an :class:`~hesig.oracles.ckks.rns.RnsCiphertext` of uint32 coefficients
    [2, L, N] (every prime is below 2^32) where SEAL's buffers can be read in place
    (:func:`hesig.oracles.ckks._seal.ciphertext_data`): half the bytes of SEAL's uint64 buffer, and
    outside SEAL's memory pool, which keeps every buffer it ever handed out. An evaluation stages
    them into SEAL one at a time (:meth:`CKKSServer._stage`, through ``staged``). Elsewhere a
    feature is the SEAL ciphertext."""

    def __init__(self, session: int, features: list, setup_seconds: float):
        self.session, self.features, self.setup_seconds = session, features, setup_seconds
        self.staged: dict = {}


class Share:
    """The part of hecnn's work one server process does (:func:`shares`): the conv1 output positions
    ``windows`` (a range, in row order) and so the features ``features`` [F_k] it builds and keeps
    per session, and the fc1 units ``units`` [H_k] it finishes in each evaluation."""

    def __init__(self, windows: range, features: np.ndarray, units: np.ndarray):
        self.windows, self.features, self.units = windows, features, units


def shares(model: PolyCNN, count: int) -> list[Share]:
    """Split hecnn's server work ``count`` ways: contiguous runs of conv1 output positions (so a
    process parses only the pixel rows its windows read) and contiguous runs of fc1 units."""
    windows = model.windows()
    if not 1 <= count <= min(len(windows), model.fc1_weight.shape[0]):
        raise InvalidValueError(f"hecnn's server work splits 1..{min(len(windows), model.fc1_weight.shape[0])} ways, got {count}")
    out = []
    for run, units in zip(np.array_split(np.arange(len(windows)), count),
                          np.array_split(np.arange(model.fc1_weight.shape[0]), count)):
        span = range(int(run[0]), int(run[-1]) + 1)
        features = np.sort(np.concatenate([windows[w][1] for w in span]))
        out.append(Share(span, features, units))
    return out


class Head:
    """The public description of a set of ciphertexts at one level (an evaluation's perturbed
    features, or its logits before fc2's bias): parms id, scale, correction factor and
    serialization version; enough to rebuild a SEAL ciphertext from its coefficients."""

    def __init__(self, parms_id: bytes, scale: float, correction_factor: int, version: tuple):
        self.parms_id, self.scale, self.correction_factor, self.version = parms_id, scale, correction_factor, version


class CKKSServer:
    def __init__(self, context_message: bytes, model: PolyCNN):
        header, parts = wire.unpack(context_message, "context", None)
        try:
            ctx = ts.context_from(bytes(parts[0]))
        except Exception:  # TenSEAL raises bare ValueError/RuntimeError on garbage
            raise MismatchError("the context message does not hold a TenSEAL CKKS context") from None
        if ctx.is_private() or ctx.has_secret_key():
            raise InvalidValueError("refusing a CKKS context that holds a secret key: the server may only "
                                    "hold the public context (serialize it with save_secret_key=False)")
        if wire.context_id(bytes(parts[0])) != header.get("context_id"):
            raise MismatchError("context message is inconsistent (context id does not match its content)")
        layout = header.get("layout", "batched")
        if layout not in CKKS_LAYOUTS:
            raise MismatchError(f"the context message names an unknown layout {str(layout)[:40]!r}")
        encryption = header.get("encryption", "public-key")
        if encryption not in CKKS_ENCRYPTIONS:
            raise MismatchError(f"the context message names an unknown encryption {str(encryption)[:40]!r}")
        # seeded: [context, relinearization keys, Galois keys if compact], keys in SEAL's seeded
        # (half-size) form; public-key: [context with its relinearization keys, Galois keys if compact]
        keys = list(parts[1:]) if encryption == "seeded" else [None] + list(parts[1:])
        expected = 2 if layout == "compact" else 1
        if len(keys) != expected:
            raise InvalidValueError(f"a {encryption} context message for the {layout} layout carries {expected + (encryption == 'seeded')} "
                                    f"parts (context{', relinearization keys' if encryption == 'seeded' else ''}"
                                    f"{', Galois keys' if layout == 'compact' else ''}), got {len(parts)}")
        if encryption == "public-key" and not ctx.has_relin_keys():
            raise InvalidValueError("the public context carries no relinearization keys")
        self.context_id, self.layout, self.encryption, self.model = header["context_id"], layout, encryption, model
        self._scratch = Scratch(self)
        self._seal = ctx.seal_context().data
        self._ctx = ctx
        self._moduli = moduli_by_parms(self._seal)
        self._first = pid_bytes(self._seal.first_parms_id())
        self.poly_modulus_degree = self._seal.first_context_data().parms().poly_modulus_degree()
        self.slots = self.poly_modulus_degree // 2
        levels = len(self._moduli) - 1
        if model.depth > levels:
            raise InvalidValueError(f"the model needs {model.depth} multiplicative levels but the client's CKKS "
                                    f"context provides {levels} (scale out of bounds)")
        if any(int(q) >= 1 << 32 for q in self._moduli[self._first]):
            raise InvalidValueError("the server's numpy layers need coefficient primes below 32 bits")
        self._encoder, self._eval = sa.CKKSEncoder(self._seal), sa.Evaluator(self._seal)
        relin = keys[0] if keys[0] is not None else self._scratch.save(ctx.relin_keys().data)
        try:
            self._relin = self._scratch.load(sa.RelinKeys(), self._seal, relin)
        except Exception:
            raise MismatchError("the relinearization keys do not belong to this CKKS context") from None
        self._version = rns.seal_version(relin)
        self._galois = None
        if self.layout == "compact":
            try:
                self._galois = self._scratch.load(sa.GaloisKeys(), self._seal, keys[1])
            except Exception:
                raise MismatchError("the Galois keys do not belong to this CKKS context") from None
        self.weight_scale = weight_scale([int(q) for q in self._moduli[self._first]])
        self._fc1 = np.rint(model.fc1_weight * self.weight_scale).astype(np.int64)
        self._fc2 = seal_integers(model.fc2_weight, self.weight_scale)

    # -- sessions ---------------------------------------------------------------------------

    @property
    def holds_secret_key(self) -> bool:
        """Always False: construction refuses a context that carries a secret key."""
        return bool(self._ctx.is_private() or self._ctx.has_secret_key())

    def open_session(self, message: bytes) -> Session:
        """Receive one encrypted image; compute its conv1-feature ciphertexts."""
        t0 = time.perf_counter()
        session, parts = self.read_input(message)
        return self.open_parts(session, parts, None, t0)

    def read_input(self, message) -> tuple[int, list]:
        """Check an input message's header: (session id, its parts, unparsed)."""
        header, parts = wire.unpack(message, "input", self.context_id)
        if type(header.get("session")) is not int or header["session"] < 0:
            raise MismatchError(f"encrypted input names no valid session ({str(header.get('session'))[:40]})")
        if not isinstance(header.get("shape"), list) or tuple(header["shape"]) != self.model.in_shape:
            raise ShapeError(f"encrypted input has shape {header.get('shape')}, the model takes {list(self.model.in_shape)}")
        if header.get("layout") != self.layout:
            raise MismatchError(f"input uses the {header.get('layout')} layout, the context was made for {self.layout}")
        if self.layout == "batched" and len(parts) != self.model.num_pixels:
            raise ShapeError(f"expected {self.model.num_pixels} pixel ciphertexts, got {len(parts)}")
        return int(header["session"]), parts

    def open_parts(self, session: int, parts, share: Share | None, t0: float | None = None) -> Session:
        """The session of checked input parts (:meth:`read_input`): all 256 features (``share``
        None), or only ``share``'s (batched layout). ``parts`` needs to hold only the pixels that
        share's windows read (a mapping pixel -> bytes will do), plus, for share 0, every pixel no
        window reads (they are still checked)."""
        t0 = time.perf_counter() if t0 is None else t0
        if self.layout == "batched":
            features = self._features_batched(parts, share)
        elif share is None:
            features = self._features_compact(parts)
        else:
            raise InvalidValueError("only the batched layout splits over server processes")
        trim_heap()
        return Session(session, features, time.perf_counter() - t0)

    def _keep(self, ct: sa.Ciphertext):
        """A feature as a session keeps it (:class:`Session`): its uint32 coefficients, or the SEAL
        ciphertext where its buffer cannot be read in place."""
        data = ciphertext_data(ct)
        return ct if data is None else rns.RnsCiphertext(data.astype(np.uint32), pid_bytes(ct.parms_id()), ct.scale, 1,
                                                         self._version)

    def _feature(self, session: Session, f: int) -> sa.Ciphertext:
        """Feature ``f`` of ``session`` as a SEAL ciphertext (a staged one when kept as
        coefficients: valid until the session's next staging)."""
        kept = session.features[f]
        return self._stage(kept, session.staged) if isinstance(kept, rns.RnsCiphertext) else kept

    def _parse_input(self, blob: bytes) -> rns.RnsCiphertext:
        if self.encryption == "seeded":
            # SEAL expands the seed (its own PRNG) and validates the ciphertext against the context
            try:  # hesig's packed form (seeded.py) or SEAL's own serialization
                ct = self._scratch.load(sa.Ciphertext(), self._seal, seeded.to_seal(blob) if seeded.is_packed(blob) else blob)
            except MismatchError:
                raise
            except Exception:
                raise MismatchError("input is not a SEAL CKKS ciphertext of this context") from None
            if pid_bytes(ct.parms_id()) != self._first or ct.size() != 2 or not ct.is_ntt_form():
                raise MismatchError("input ciphertext was not made under this context's parameters")
            parsed = self._read(ct)
        else:
            parsed = rns.parse(blob)
        if parsed.parms_id != self._first or parsed.data.shape[0] != 2:
            raise MismatchError("input ciphertext was not made under this context's parameters")
        if parsed.data.shape[2] != self.poly_modulus_degree or not rns.check_reduced(parsed.data, self._moduli[self._first]):
            raise MismatchError("input ciphertext is malformed for this context")
        return parsed

    def _read(self, ct: sa.Ciphertext) -> rns.RnsCiphertext:
        """A SEAL ciphertext's coefficients as numpy: in place where this SEAL build allows
        (_seal.ciphertext_data), else through SEAL's (zstd) serialization."""
        data = ciphertext_data(ct)
        if data is None:
            return rns.parse(self._scratch.save(ct))
        return rns.RnsCiphertext(data, pid_bytes(ct.parms_id()), ct.scale, 1, self._version)

    def _to_seal(self, ct: rns.RnsCiphertext) -> sa.Ciphertext:
        return self._scratch.load(sa.Ciphertext(), self._seal, rns.serialize(ct))

    def _stage(self, ct: rns.RnsCiphertext, staged: dict) -> sa.Ciphertext:
        """``ct`` (the server's own numpy result) in a SEAL ciphertext that the next call with the
        same ``staged`` dict overwrites: use it only as an operation's input. The first call for a
        level, size and scale loads it through SEAL's serialization; later calls write the
        coefficients into that object in place (:func:`~hesig.oracles.ckks._seal.write_ciphertext_data`),
        skipping a serialization, a file and a load per ciphertext."""
        key = (ct.parms_id, ct.data.shape[0], ct.scale, ct.correction_factor, ct.version)
        seal_ct = staged.get(key)
        if seal_ct is None or not write_ciphertext_data(seal_ct, ct.data):
            seal_ct = staged[key] = self._to_seal(ct)
        return seal_ct

    def _features_batched(self, parts, share: Share | None = None) -> list:
        """The 256 conv1-feature ciphertexts from the 784 pixel ciphertexts (or ``share``'s), one
        row of output positions (windows) at a time. All windows of a row go to numpy as one
        exact product, features [8 windows x 4 channels] x pixels [the row's 7 x 28]: a pixel is
        converted once per row instead of once per window (~4 windows read each pixel), and the
        product has 32 output rows instead of 4. A pixel is parsed when its first row needs it and
        dropped after its last: ten pixel rows at most are held at once (~130 MB as uint32, every
        prime is below 2^32, checked in __init__) instead of all 784 (360 MB), and each row's
        features go to SEAL at once instead of waiting in a 256-feature array (235 MB), to be
        rescaled and kept as the session keeps them (:class:`Session`); None outside ``share``."""
        model = self.model
        all_windows = model.windows()
        span = range(len(all_windows)) if share is None else share.windows
        ow = model.out_hw[1]
        groups = [list(g) for _, g in itertools.groupby(span, key=lambda w: w // ow)]
        last_use = {}
        for g, group in enumerate(groups):
            for w in group:
                for p in all_windows[w][0]:
                    last_use[int(p)] = g
        if span.start == 0:  # pixels no window reads are still checked (by the first share)
            read = {int(p) for pix, _, _ in all_windows for p in pix}
            for p in range(model.num_pixels):
                if p not in read:
                    self._parse_input(parts[p])
        moduli = self._moduli[self._first]
        kernel = np.rint(all_windows[0][2] * self.weight_scale).astype(np.int64)  # [O, C*k*k], the same for every window
        held: dict[int, np.ndarray] = {}
        staged: dict = {}
        first = None
        features: list = [None] * model.num_features
        for g, group in enumerate(groups):
            pixels = sorted({int(p) for w in group for p in all_windows[w][0]})
            column = {p: i for i, p in enumerate(pixels)}
            feats = np.concatenate([all_windows[w][1] for w in group])
            weights = np.zeros((len(feats), len(pixels)), dtype=np.int64)
            for i, w in enumerate(group):
                rows = slice(i * kernel.shape[0], (i + 1) * kernel.shape[0])
                weights[rows, [column[int(p)] for p in all_windows[w][0]]] = kernel
            for p in pixels:
                if p not in held:
                    parsed = self._parse_input(parts[p])
                    first = first or parsed
                    held[p] = parsed.data.astype(np.uint32)
            acc = rns.lincomb(weights, [held[p] for p in pixels], moduli)
            scale = first.scale * self.weight_scale
            rns.add_constant(acc, np.tile(model.conv_bias, len(group)), scale, moduli)  # row i*O + o: window i, channel o
            for row, f in enumerate(feats):
                ct = sa.Ciphertext()
                self._eval.rescale_to_next(self._stage(rns.RnsCiphertext(acc[row], self._first, scale, first.correction_factor,
                                                                         first.version), staged), ct)
                features[int(f)] = self._keep(ct)
            del acc
            for p in pixels:
                if last_use[p] == g:
                    del held[p]
        return features

    def _features_compact(self, parts: list[bytes]) -> list:
        model = self.model
        if len(parts) != 1:
            raise ShapeError(f"the compact layout sends one ciphertext, got {len(parts)}")
        first = self._parse_input(parts[0])
        image = self._to_seal(first)
        o, c, k, _ = model.conv_weight.shape
        oh, ow = model.out_hw
        windows = oh * ow
        if k * k * windows > self.slots:
            raise ShapeError("the image's im2col layout does not fit in the slots")
        kernel = model.conv_weight.reshape(o, k * k)
        plain, rot = sa.Plaintext(), sa.Ciphertext()
        steps = [1 << i for i in range(self.slots.bit_length() - 1)]
        out = []
        for ch in range(o):
            for w in range(windows):
                mask = np.zeros(self.slots)
                mask[np.arange(k * k) * windows + w] = kernel[ch]
                self._encoder.encode(mask.tolist(), self.weight_scale, plain)
                prod = sa.Ciphertext()
                self._eval.multiply_plain(image, plain, prod)
                # Rotate-and-sum before rescaling: the key-switching noise of the 12 rotations is
                # additive, so at scale 2^52 it is 2^26 times smaller relative to the signal.
                for step in steps:  # every slot ends up holding the masked sum
                    self._eval.rotate_vector(prod, step, self._galois, rot)
                    self._eval.add_inplace(prod, rot)
                self._eval.rescale_to_next_inplace(prod)
                self._encoder.encode(float(model.conv_bias[ch]), prod.parms_id(), prod.scale, plain)
                self._eval.add_plain_inplace(prod, plain)
                out.append(self._keep(prod))
        return out

    # -- evaluation -------------------------------------------------------------------------

    def check_perturbations(self, perturbations: np.ndarray) -> np.ndarray:
        """float64 [Q, C, H, W] with 1 <= Q <= slots - 1, finite; refused in one line otherwise."""
        model = self.model
        pert = np.asarray(perturbations, dtype=np.float64)
        if pert.ndim != 4 or tuple(pert.shape[1:]) != model.in_shape:
            raise ShapeError(f"perturbations have shape {list(pert.shape)}, expected [Q, {', '.join(map(str, model.in_shape))}]")
        if not 1 <= pert.shape[0] <= self.slots - 1:
            raise ShapeError(f"one evaluation answers 1..{self.slots - 1} queries, got {pert.shape[0]}")
        if not np.isfinite(pert).all():
            raise InvalidValueError("perturbations contain NaN or infinity")
        return pert

    def evaluate(self, session: Session, perturbations: np.ndarray) -> bytes:
        """Answer ``len(perturbations)`` queries (<= slots - 1) with one homomorphic evaluation.

        perturbations: float [Q, C, H, W] (plaintext, the server's own). Returns the result
        message: 10 logit ciphertexts, slot j = query j, slot Q = the unperturbed input.
        """
        pert = self.check_perturbations(perturbations)
        shift = self.model.conv_linear(pert)  # [Q, F]: conv1 is affine, so Enc(conv1 X) + W*N = Enc(conv1(X + N))
        everything = np.arange(self.model.num_features)
        hidden, head = self.fc1_partial(session, shift, everything)
        logits, logit_head = self.head_partial(hidden, np.arange(self._fc1.shape[0]), head)
        return self.finish(session, pert.shape[0], [logits], logit_head)

    def fc1_partial(self, session: Session, shift: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, Head]:
        """Perturb ``features`` [F_k] of the session and take their part of fc1 (before its bias):
        sum_{f in F_k} W1[:, f] (conv1(X + N_j)_f)^2, exactly mod q, on the NTT coefficients.

        shift: float64 [Q, F_k] (column i belongs to features[i]) or [Q, 256] (indexed by feature).
        Returns uint64 [H, 3, L, N] (size-3: not relinearized), reduced mod each prime, and the head.
        Partials of disjoint feature sets add up (mod q) to the whole, in any order."""
        count = shift.shape[0]
        columns = shift if shift.shape[1] == len(features) else shift[:, features]
        features = np.asarray(features)
        plain, tmp = sa.Plaintext(), sa.Ciphertext()
        vec = np.zeros(self.slots)
        squares = hidden = head = moduli = None
        # fc1 over blocks of FC1_BLOCK features, summed mod q: the squares of one block (75 MB as
        # uint32) instead of all 256 (151 MB) exist at any moment, for one more modular sum per block
        for start in range(0, len(features), FC1_BLOCK):
            block = slice(start, min(start + FC1_BLOCK, len(features)))
            for i, f in enumerate(features[block]):
                ct = self._feature(session, int(f))
                vec[:count] = columns[:, block.start + i]
                self._encoder.encode(vec.tolist(), ct.parms_id(), ct.scale, plain)
                self._eval.add_plain(ct, plain, tmp)
                # x^2 in SEAL (its tensor square: the same residues as numpy's, in C++), left
                # size-3: relinearizing 64 fc1 outputs costs less than relinearizing 256 squares
                self._eval.square_inplace(tmp)
                parsed = self._read(tmp)
                if squares is None:  # uint32: every prime is below 2^32 (checked in __init__)
                    squares = np.empty((min(FC1_BLOCK, len(features)),) + parsed.data.shape, dtype=np.uint32)
                    head = Head(parsed.parms_id, ct.scale, parsed.correction_factor, parsed.version)  # the features' scale
                    moduli = self._moduli[head.parms_id]
                squares[i] = parsed.data
            width = block.stop - block.start
            hidden = rns.lincomb(self._fc1[:, features[block]], squares[:width], moduli, into=hidden)
        return hidden, head

    def moduli_of(self, head: Head) -> np.ndarray:
        """uint64 [L, 1]: the primes of the head's level, shaped to broadcast over [.., L, N]."""
        return self._moduli[head.parms_id].astype(np.uint64)[:, None]

    def add_partials(self, a: np.ndarray, b: np.ndarray, head: Head) -> np.ndarray:
        """(a + b) mod q, in place in ``a``: two fc1 partials [H, 3, L, N] of disjoint features."""
        np.add(a, b, out=a)
        np.remainder(a, self.moduli_of(head), out=a)
        return a

    def head_partial(self, hidden: np.ndarray, units: np.ndarray, head: Head) -> tuple[np.ndarray, Head]:
        """fc1's bias, x^2 and fc2 for fc1 units ``units`` [H_k]: hidden holds their rows
        [H_k, 3, L, N] (every feature summed). Returns this share's part of fc2 (no bias, not
        relinearized, not rescaled), sum_{h in H_k} W2[:, h] act_h, as uint64 [classes, 3, L', N]
        exactly mod q, and the head of those logits. fc2's weights are integers at the weight
        scale, so fc2 is one more exact modular product in numpy.

        Order, chosen by cost (SEAL at N 8192): a unit at scale s^2 w (~2^78) is rescaled once
        while size 3, relinearized at 5 primes instead of 6 (a key switch costs about the square of
        the number of primes), rescaled, squared, and left size 3: the 10 logits are relinearized
        after fc2 instead of the 64 squares before it.
        Every key switch and size-3 rescale happens at a scale >= 2^52, where its noise (~2^12)
        is below 2^-40 of the signal."""
        model = self.model
        moduli = self._moduli[head.parms_id]
        scale = head.scale * head.scale * self.weight_scale
        rns.add_constant(hidden, model.fc1_bias[units], scale, moduli)
        acts = act = None
        staged: dict = {}
        for i, h in enumerate(hidden):
            ct = sa.Ciphertext()
            self._eval.rescale_to_next(self._stage(rns.RnsCiphertext(h, head.parms_id, scale, head.correction_factor,
                                                                     head.version), staged), ct)
            self._eval.relinearize_inplace(ct, self._relin)
            self._eval.rescale_to_next_inplace(ct)
            self._eval.square_inplace(ct)
            act = self._read(ct)
            if acts is None:
                acts = np.empty((len(hidden),) + act.data.shape, dtype=np.uint32)  # every prime is below 2^32
            acts[i] = act.data
        del hidden
        logits = rns.lincomb(self._fc2[:, np.asarray(units)], acts, self._moduli[act.parms_id])
        return logits, Head(act.parms_id, act.scale * self.weight_scale, act.correction_factor, act.version)

    def finish(self, session: Session, count: int, partials: list[np.ndarray], head: Head) -> bytes:
        """The result message from every share's partial logits (:meth:`head_partial`, with its
        head): their sum mod q per class, fc2's bias, relinearization and the last two rescales.
        Modular sums are exact, so any split gives the same bytes as one process."""
        model = self.model
        logits = partials[0]
        for other in partials[1:]:
            self.add_partials(logits, other, head)
        rns.add_constant(logits, model.fc2_bias, head.scale, self._moduli[head.parms_id])
        parts = []
        staged: dict = {}
        for logit in logits:
            ct = sa.Ciphertext()
            self._eval.relinearize(self._stage(rns.RnsCiphertext(logit, head.parms_id, head.scale, head.correction_factor,
                                                                 head.version), staged), self._relin, ct)
            self._eval.rescale_to_next_inplace(ct)
            self._eval.rescale_to_next_inplace(ct)
            parts.append(self._scratch.save(ct))
        message = wire.pack("result", self.context_id, parts, session=session.session, count=int(count))
        trim_heap()  # an evaluation frees ~200 MB of numpy temporaries
        return message
