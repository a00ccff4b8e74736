"""Client policies: what the victim releases from decrypted logits, and how often it decrypts.

A policy turns the logits the client decrypted for one evaluation -- float64 [num_classes,
count + 1], column j = query j, the last column = the unperturbed input -- and the client's
reference label into the released bits (bool [count]: top-1 == reference label). It is
TenSEAL-free so the plaintext oracle can apply the very same release rule (signature attack
under the same defense) as the CKKS client (key-recovery attack).

Spec strings (``parse_client_policy``), components joined by ``+``:

* ``undefended``: hesig's original client. Accepts any result message, lets the server pick
  the session and reset the reference label. Only for experiments.
* ``strict``: validates every server message (kind, context id, session, count, number of
  ciphertexts, size, level, scale, slot count); the session and its reference label are the
  client's, fixed once per input. Every other policy is strict too.
* ``flooding:SIGMA`` / ``flooding:auto``: Gaussian noise of std SIGMA (logit units) added to
  every decrypted logit before the comparison, fresh per decryption. ``auto`` chooses SIGMA as
  OpenFHE's NOISE_FLOODING_DECRYPT does (prior-art bound of Li, Micciancio, Schultz, Sorrell,
  eprint 2022/816, sec. 6.2): log2 SIGMA = log2 E + lambda/2 + log2(64 t)/2 with E the CKKS error
  of a decrypted logit (:data:`LOGIT_NOISE_ESTIMATE`), lambda = 30 bits of statistical
  security (OpenFHE's default) and t the decryptions allowed (the budget, else OpenFHE's
  N_d = 128).
* ``rounding:DIGITS``: decrypted logits rounded to DIGITS decimals ((delta, r)-exact style).
* ``budget:N``: at most N replies per secret key; then the client refuses (QueryBudgetExhausted).
* ``fresh-keys``: a new key pair for every input (session); a key never serves two inputs.

Defenses against the perturbation-signature attack (issue 19; ``results/defenses``):

* ``rr:P``: randomized response on the released label: with probability P the client acts on
  its runner-up class instead of its top-1. Near a decision boundary between the reference class
  and another (where every search query lands) this flips the released bit with probability P,
  both ways; honest top-1 accuracy drops by about P.
* ``bdpl:P@M``: boundary-aware randomized response (BDPL, Zheng et al. 2020): the same, but only
  for evaluations whose top-1 margin (top-1 minus runner-up logit, after flooding and rounding)
  is below M logit units. Confident honest answers are never touched.
* ``input-noise:SIGMA``: fresh Gaussian noise of std SIGMA (pixel units, images in [0, 1]) added
  to the input of every evaluation (randomized smoothing). Plaintext oracle only: a CKKS client
  encrypts its input once, and a server that replays one noisy ciphertext would strip the noise.
* ``evaluations:N``: at most N evaluations (queries) answered per input, whatever the number of
  replies; then the client refuses (ClientRefusal). Honest single inference needs one.

``flooding`` (noise on the decrypted logits) and ``rounding`` (coarse release) double as
signature-attack defenses. The client's view of each input (:class:`ClientView`: evaluations,
flips, margins) is what :mod:`hesig.defenses.detector` scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..core.errors import InvalidValueError

#: E: error of one decrypted hecnn logit at hesig's parameters (N 8192, scale 2^26), logit units.
#: Measured by results/key_recovery/run.py ("logit_noise" in results.json: max |CKKS - plaintext|
#: over the 4095 slots of one MNIST evaluation was 4.3e-3, mean 3.6e-4); rounded up.
LOGIT_NOISE_ESTIMATE = 5e-3
#: OpenFHE's default statistical security (bits) and lower bound on tolerated decryptions.
STATISTICAL_SECURITY = 30
OPENFHE_MIN_DECRYPTIONS = 128


def openfhe_flooding_sigma(noise_estimate: float = LOGIT_NOISE_ESTIMATE, decryptions: int = OPENFHE_MIN_DECRYPTIONS,
                           statistical_security: int = STATISTICAL_SECURITY) -> float:
    """sigma = E * 2^(lambda/2) * sqrt(64 t) (logit units)."""
    return float(noise_estimate * 2.0 ** (statistical_security / 2) * math.sqrt(64 * decryptions))


@dataclass(frozen=True)
class ClientPolicy:
    """strict: validate server messages (False only for ``undefended``); flooding_sigma: std of the
    Gaussian noise added to each decrypted logit (logit units, 0 = none); rounding_digits: round
    decrypted logits to this many decimals (None = no rounding); replies_per_key: decryption
    budget per key (None = unlimited); fresh_keys: one key pair per input; seed: flooding RNG."""

    strict: bool = True
    flooding_sigma: float = 0.0
    rounding_digits: int | None = None
    replies_per_key: int | None = None
    fresh_keys: bool = False
    seed: int = 0
    flooding_auto: bool = False
    runner_up_p: float = 0.0
    runner_up_margin: float = math.inf
    input_noise: float = 0.0
    evaluations_per_input: int | None = None

    def __post_init__(self):
        if not (math.isfinite(self.flooding_sigma) and self.flooding_sigma >= 0):
            raise InvalidValueError(f"flooding sigma must be a finite number >= 0, got {self.flooding_sigma}")
        if self.rounding_digits is not None and not 0 <= int(self.rounding_digits) <= 12:
            raise InvalidValueError(f"rounding digits must be 0..12, got {self.rounding_digits}")
        if self.replies_per_key is not None and int(self.replies_per_key) < 1:
            raise InvalidValueError(f"a decryption budget must allow >= 1 reply per key, got {self.replies_per_key}")
        if not 0.0 <= self.runner_up_p < 0.5:
            raise InvalidValueError(f"a randomized-response probability must be in [0, 0.5), got {self.runner_up_p}")
        if not (self.runner_up_margin > 0):
            raise InvalidValueError(f"a boundary margin must be > 0 logit units, got {self.runner_up_margin}")
        if not (math.isfinite(self.input_noise) and 0 <= self.input_noise <= 10):
            raise InvalidValueError(f"input noise must be a std in [0, 10] pixel units, got {self.input_noise}")
        if self.evaluations_per_input is not None and int(self.evaluations_per_input) < 1:
            raise InvalidValueError(f"an evaluation budget must allow >= 1 evaluation per input, got "
                                    f"{self.evaluations_per_input}")
        if not self.strict and self.spec_parts()[1:]:
            raise InvalidValueError("'undefended' cannot be combined with other client policies")

    @property
    def spec(self) -> str:
        """The canonical spec string (round-trips through :func:`parse_client_policy`)."""
        if not self.strict:
            return "undefended"
        return "+".join(self.spec_parts())

    def spec_parts(self) -> list[str]:
        parts = ["strict" if self.strict else "undefended"]
        if self.flooding_auto:
            parts.append("flooding:auto")
        elif self.flooding_sigma:
            parts.append(f"flooding:{self.flooding_sigma:g}")
        if self.rounding_digits is not None:
            parts.append(f"rounding:{self.rounding_digits}")
        if self.replies_per_key is not None:
            parts.append(f"budget:{self.replies_per_key}")
        if self.fresh_keys:
            parts.append("fresh-keys")
        if self.runner_up_p:
            parts.append(f"rr:{self.runner_up_p:g}" if math.isinf(self.runner_up_margin)
                         else f"bdpl:{self.runner_up_p:g}@{self.runner_up_margin:g}")
        if self.input_noise:
            parts.append(f"input-noise:{self.input_noise:g}")
        if self.evaluations_per_input is not None:
            parts.append(f"evaluations:{self.evaluations_per_input}")
        return parts

    @property
    def alters_logits(self) -> bool:
        return bool(self.flooding_sigma) or self.rounding_digits is not None

    def check_encrypted(self) -> "ClientPolicy":
        """Refuse (one line) what a CKKS client cannot enforce; returns self."""
        if self.input_noise:
            raise InvalidValueError("client policy input-noise works with the plaintext oracle only: a CKKS client "
                                    "encrypts its input once, and a server that replays that one ciphertext would "
                                    "see no fresh noise")
        return self

    @property
    def needs_rng(self) -> bool:
        """Whether releasing draws random numbers (flooding, randomized response)."""
        return bool(self.flooding_sigma) or bool(self.runner_up_p)

    def rng(self, salt: int = 0) -> np.random.Generator:
        """The flooding noise generator of one client (salt: e.g. a key or row counter)."""
        return np.random.default_rng([int(self.seed), int(salt)])

    def decided(self, logits: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """The values the client decides on: logits float64 [num_classes, M] after flooding and rounding."""
        values = np.asarray(logits, dtype=np.float64)
        if self.flooding_sigma:
            if rng is None:
                raise InvalidValueError("a flooding policy needs its random generator")
            values = values + rng.normal(0.0, self.flooding_sigma, values.shape)
        if self.rounding_digits is not None:
            values = np.round(values, int(self.rounding_digits))
        return values

    def randomized(self, values: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Released classes int64 [M] from decided values [num_classes, M]: the top-1, or with
        probability ``runner_up_p`` the runner-up where the top-1 margin is below ``runner_up_margin``."""
        top = values.argmax(0)
        if not self.runner_up_p or values.shape[1] == 0:
            return top
        if rng is None:
            raise InvalidValueError("a randomized-response policy needs its random generator")
        order = np.argsort(-values, axis=0, kind="stable")[:2]
        ranked = np.take_along_axis(values, order, 0)
        swap = (rng.random(values.shape[1]) < self.runner_up_p) & (ranked[0] - ranked[1] < self.runner_up_margin)
        return np.where(swap, order[1], order[0])

    def released_top(self, logits: np.ndarray, rng: np.random.Generator | None, *, randomize: bool = True) -> np.ndarray:
        """logits float64 [num_classes, M] -> the class the client acts on, int64 [M]: after
        flooding and rounding, and (``randomize``) randomized response. The client's own
        reference class is taken with ``randomize=False``: it knows its answer; it randomizes
        only what it releases."""
        values = self.decided(logits, rng)
        return self.randomized(values, rng) if randomize else values.argmax(0)

    def release(self, logits: np.ndarray, label: int | None, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
        """One evaluation's reply.

        logits: float64 [num_classes, count + 1] (column count = the unperturbed input).
        label: the client's reference class, or None before its first reply for this input (then
        the unperturbed column fixes it). Returns (bits bool [count], reference label).
        """
        values = self.decided(logits, rng)
        count = values.shape[1] - 1
        if label is None:
            label = int(values[:, count].argmax())
        return self.randomized(values[:, :count], rng) == label, int(label)


class ClientView:
    """What a client sees of each of its inputs across a search, for the detector
    (:mod:`hesig.defenses.detector`): per input, the evaluations it decrypted, how many of them
    changed its top-1 class (before any randomized response: the client knows the truth), and
    the sum and sum of squares of the signed margin (logit of the reference class minus the
    largest other logit, decrypted values, logit units; negative where the class changed)."""

    def __init__(self, rows: int = 0):
        self.stats = np.zeros((int(rows), 4), dtype=np.float64)  # evaluations, flips, margin sum, margin^2 sum

    def _grow(self, rows: int) -> None:
        if rows > self.stats.shape[0]:
            self.stats = np.vstack([self.stats, np.zeros((rows - self.stats.shape[0], 4))])

    def record(self, rows: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> None:
        """rows int [M] (input ids), logits float64 [num_classes, M] as decrypted, labels int [M] references."""
        rows, labels = np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        if rows.size == 0:
            return
        self._grow(int(rows.max()) + 1)
        values = np.asarray(logits, dtype=np.float64)
        cols = np.arange(values.shape[1])
        own = values[labels, cols]
        others = values.copy()
        others[labels, cols] = -np.inf
        margin = own - others.max(0)
        for k, column in enumerate((np.ones_like(margin), (margin < 0).astype(np.float64), margin, margin ** 2)):
            np.add.at(self.stats[:, k], rows, column)

    def features(self) -> dict[str, np.ndarray]:
        """Per input, float64 [rows]: evaluations, flip_rate, margin_std (spread of the slot results)."""
        n, flips, total, squares = self.stats.T
        safe = np.maximum(n, 1)
        mean = total / safe
        return {"evaluations": n, "flip_rate": flips / safe,
                "margin_std": np.sqrt(np.maximum(squares / safe - mean ** 2, 0.0))}


UNDEFENDED = ClientPolicy(strict=False)
STRICT = ClientPolicy()
#: The default: the strongest policy measured to keep honest top-1 accuracy within 0.1 point of
#: plaintext (results/key_recovery/TABLE.md): strict validation, one reply per key and one key per
#: input. Honest inference needs exactly one reply per input; the key-recovery attack needs
#: 1 + 2 x its bisection steps (23 at the fewest steps that recovered the key), and the paper's
#: signature search needs one reply per search round. It does NOT stop a signature attacker that
#: asks its whole grid in one result (``grid:40``: 4,000 slots; results/defenses/ckks_confirm-*). Experiments that measure those attacks against a
#: weaker client name their policy explicitly (e.g. ``strict`` or ``undefended``).
DEFAULT_POLICY_SPEC = "strict+budget:1+fresh-keys"


#: The spec grammar, for messages and --help.
POLICY_CHOICES = ("strict, undefended, flooding:SIGMA|auto, rounding:DIGITS, budget:N, fresh-keys, rr:P, "
                  "bdpl:P@MARGIN, input-noise:SIGMA, evaluations:N")


def parse_client_policy(spec: str | ClientPolicy | None, *, seed: int = 0) -> ClientPolicy:
    """Parse ``strict``, ``undefended``, ``flooding:SIGMA|auto``, ``rounding:DIGITS``, ``budget:N``,
    ``fresh-keys``, joined with ``+`` (e.g. ``flooding:auto+budget:8``); None = the default."""
    if isinstance(spec, ClientPolicy):
        return spec
    if spec is None:
        spec = DEFAULT_POLICY_SPEC
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidValueError(f"client policy must be a non-empty string, got {spec!r}")
    fields: dict = {"seed": int(seed)}
    auto = False
    seen = set()
    for part in spec.strip().split("+"):
        name, _, value = part.strip().partition(":")
        name = name.strip().lower()
        if name in seen:
            raise InvalidValueError(f"client policy '{spec}' names '{name}' twice")
        seen.add(name)
        if name in ("strict", "undefended", "fresh-keys") and value:
            raise InvalidValueError(f"client policy '{name}' takes no value, got '{part}'")
        if name == "undefended":
            fields["strict"] = False
        elif name == "strict":
            pass
        elif name == "fresh-keys":
            fields["fresh_keys"] = True
        elif name == "flooding":
            if value.strip().lower() == "auto":
                auto = True
            else:
                fields["flooding_sigma"] = _number(value, part, float)
        elif name == "rounding":
            fields["rounding_digits"] = _number(value, part, int)
        elif name == "budget":
            fields["replies_per_key"] = _number(value, part, int)
        elif name in ("rr", "bdpl"):
            if {"rr", "bdpl"} <= seen:
                raise InvalidValueError(f"client policy '{spec}' names both rr and bdpl (bdpl is rr near the boundary)")
            prob, at, margin = value.partition("@")
            if (name == "bdpl") != bool(at):
                raise InvalidValueError(f"client policy '{part}': write rr:P or bdpl:P@MARGIN")
            fields["runner_up_p"] = _number(prob, part, float)
            if at:
                fields["runner_up_margin"] = _number(margin, part, float)
        elif name == "input-noise":
            fields["input_noise"] = _number(value, part, float)
        elif name == "evaluations":
            fields["evaluations_per_input"] = _number(value, part, int)
        else:
            raise InvalidValueError(f"unknown client policy '{part}' (choose from {POLICY_CHOICES})")
    policy = ClientPolicy(**fields)
    if auto:
        policy = replace(policy, flooding_auto=True,
                         flooding_sigma=openfhe_flooding_sigma(decryptions=policy.replies_per_key or OPENFHE_MIN_DECRYPTIONS))
    return policy


def _number(value: str, part: str, kind):
    try:
        return kind(value)
    except ValueError:
        raise InvalidValueError(f"client policy '{part}' needs a{'n integer' if kind is int else ' number'} "
                                f"value") from None


__all__ = ["ClientPolicy", "ClientView", "DEFAULT_POLICY_SPEC", "POLICY_CHOICES", "LOGIT_NOISE_ESTIMATE", "STRICT", "UNDEFENDED",
           "openfhe_flooding_sigma", "parse_client_policy"]
