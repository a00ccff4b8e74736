"""A search detector at the client, and the honest traffic it is measured against (issue 19).

An HE client decrypts every evaluation of its input, so it sees what a stateful detector
(Chen, Carlini & Wagner 2019; Blacklight, USENIX Security 2022) would want -- not the queries
(they are encrypted perturbations the server added) but their results. Per input it keeps a
:class:`~hesig.oracles.policies.ClientView`; the detector scores three features of it:

* ``evaluations``: how many evaluations of this input it decrypted (log10);
* ``flip_rate``: the fraction whose top-1 class differs from its own (a bisection flips in about
  half of its queries; honest traffic rarely does);
* ``margin_std``: the spread of the signed margin (reference logit minus the largest other) over
  those evaluations (the search's coarse pass reaches far from the input).

It is one-class: calibrated on honest traffic only (the client cannot know the attack). Each
feature is standardised with the mean and standard deviation of the calibration sessions, and
the score is the largest standardised feature, max_f (x_f - mu_f) / sigma_f: continuous, so a
search far outside everything honest scores far above the threshold (a rank p-value would
saturate at 1 / (n + 1)). The threshold is the (1 - FPR) quantile of the scores of a second,
held-out honest set, and the false-positive rate is then re-measured on a third.

Honest traffic (:func:`honest_traffic`), what a client that decrypts more than one evaluation of
the same input legitimately sees -- every kind uses the same model under the same client policy:

* ``single``: one evaluation (plain inference; the common case).
* ``repeated``: the same input evaluated 2-20 times (retries, a periodic re-check).
* ``augmented``: 8-64 test-time augmentations (shifts of up to 2 pixels plus noise of std 0.05),
  ordinary batch use of a robustness-minded client.
* ``smoothing``: randomized-smoothing certification (Cohen, Rosenfeld & Kolter 2019): 100-2,000
  copies with Gaussian noise of std 0.1-0.25 -- the heaviest honest pattern, with real flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import InvalidValueError
from ..oracles.plaintext import PlaintextOracle
from ..oracles.policies import ClientPolicy, ClientView

FEATURES = ("evaluations", "flip_rate", "margin_std")
HONEST_KINDS = ("single", "repeated", "augmented", "smoothing")


def view_features(view: ClientView, rows: np.ndarray | None = None) -> np.ndarray:
    """float64 [n, 3]: log10 evaluations, flip rate, margin spread of each input (``rows``: a subset)."""
    f = view.features()
    table = np.stack([np.log10(np.maximum(f["evaluations"], 1)), f["flip_rate"], f["margin_std"]], axis=1)
    return table if rows is None else table[np.asarray(rows)]


@dataclass
class SearchDetector:
    """One-class detector: fit on honest features, threshold on held-out honest scores.

    fpr: the target false-positive rate in (0, 0.5) (1 % by default).
    """

    fpr: float = 0.01

    def __post_init__(self):
        if not 0 < self.fpr < 0.5:
            raise InvalidValueError(f"a detector's false-positive rate must be in (0, 0.5), got {self.fpr}")
        self._fitted = False
        self.threshold = None

    def fit(self, calibration: np.ndarray, held_out: np.ndarray) -> "SearchDetector":
        """calibration / held_out: honest features [n, 3] (two disjoint sets of sessions)."""
        if len(calibration) < 10 or len(held_out) < 10:
            raise InvalidValueError("a detector needs >= 10 honest sessions in each of its two sets")
        calibration = np.asarray(calibration, dtype=np.float64)
        self._mean = calibration.mean(0)
        self._std = np.maximum(calibration.std(0), 1e-6)  # a constant honest feature: any change stands out
        self._fitted = True
        self.threshold = float(np.quantile(self.score(held_out), 1 - self.fpr, method="higher"))
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """float64 [n]: the largest feature in honest standard deviations above the honest mean."""
        if not self._fitted:
            raise InvalidValueError("fit the detector on honest traffic first")
        return ((np.asarray(features, dtype=np.float64) - self._mean) / self._std).max(1)

    def flags(self, features: np.ndarray) -> np.ndarray:
        """bool [n]: score above the threshold."""
        return self.score(features) > self.threshold

    def report(self, attack: np.ndarray, honest_test: np.ndarray) -> dict:
        """TPR on attacked inputs and FPR on a third honest set at the fitted threshold, plus the
        ROC (FPR, TPR) over thresholds, for figures."""
        a, h = self.score(attack), self.score(honest_test)
        cuts = np.unique(np.concatenate([a, h, [np.inf]]))
        roc = [(float((h > c).mean()), float((a > c).mean())) for c in cuts[::max(1, len(cuts) // 50)]]
        return {"tpr": float((a > self.threshold).mean()), "fpr": float((h > self.threshold).mean()),
                "target_fpr": self.fpr, "threshold": self.threshold, "n_attack": len(a), "n_honest": len(h),
                "roc": sorted(set(roc))}


def honest_traffic(model: torch.nn.Module, images: torch.Tensor, kind: str, policy: ClientPolicy | str, *,
                   seed: int = 0, device: str | torch.device | None = None) -> np.ndarray:
    """Run honest sessions of ``kind`` (one per image) through a plaintext client under ``policy``;
    returns their features float64 [n, 3] (see the module docstring for each kind)."""
    if kind not in HONEST_KINDS:
        raise InvalidValueError(f"unknown honest traffic '{kind}' (choose from {', '.join(HONEST_KINDS)})")
    oracle = PlaintextOracle(model, images, policy=policy, seed=seed, device=device)
    gen = torch.Generator().manual_seed(int(seed))
    n = images.shape[0]
    for row in range(n):
        x = images[row:row + 1]
        if kind == "single":
            pert = torch.zeros_like(x)
        elif kind == "repeated":
            pert = torch.zeros_like(x).repeat(int(torch.randint(2, 21, (1,), generator=gen)), 1, 1, 1)
        elif kind == "augmented":
            m = int(torch.randint(8, 65, (1,), generator=gen))
            shifts = torch.randint(-2, 3, (m, 2), generator=gen)
            views = torch.cat([torch.roll(x, (int(a), int(b)), dims=(2, 3)) for a, b in shifts])
            pert = views - x + 0.05 * torch.randn(views.shape, generator=gen)
        else:  # smoothing
            m = int(10 ** (2 + float(torch.rand(1, generator=gen)) * np.log10(20)))  # log-uniform 100..2000
            sigma = 0.1 + 0.15 * float(torch.rand(1, generator=gen))
            pert = sigma * torch.randn((m, *x.shape[1:]), generator=gen)
        for start in range(0, pert.shape[0], oracle.capacity):
            part = pert[start:start + oracle.capacity]
            oracle.same_label(part, torch.full((part.shape[0],), row, dtype=torch.long))
    return view_features(oracle.view)


__all__ = ["FEATURES", "HONEST_KINDS", "SearchDetector", "honest_traffic", "view_features"]
