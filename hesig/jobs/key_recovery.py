"""``hesig attack key-recovery``: a malicious model owner against the victim CKKS client.

The victim (CKKSClient under a client policy) publishes its context and encrypts one secret
image, as in every hesig session. The model owner runs its honest server once to learn the
result format, then switches to MaliciousServer + KeyRecoveryAttack, which see only the
context bytes, the input message and the victim's reply bits. The job alone (the harness) then
scores the recovered key against the victim's real one and decrypts the victim's input with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import InvalidValueError

DEFAULT_STEPS = 12


def _true_key_ntt(client, levels: int) -> np.ndarray:
    """The victim's secret key, NTT form at the first ``levels`` primes (scoring only)."""
    sk = client._ctx.secret_key().data.data()
    n = sk.coeff_count()
    data = np.fromiter((sk.data(i) for i in range(n)), dtype=np.uint64, count=n)
    return data.reshape(-1, client.params.poly_modulus_degree)[:levels]


def _decrypt_input(server, s_ntt: np.ndarray, input_message: bytes, shape, layout: str, kernel: int, stride: int) -> np.ndarray:
    """The victim's image [C, H, W] decrypted with a recovered key (the attacker's view)."""
    from ..oracles.ckks import wire
    from ..oracles.ckks.polymodel import im2col_slots

    _, parts = wire.unpack(input_message, "input", server.context_id)
    if layout == "batched":
        pixels = [server.decrypt_with(s_ntt, server.input_ciphertext(p)).real.mean() for p in parts]
        return np.asarray(pixels).reshape(shape)
    slots = server.decrypt_with(s_ntt, server.input_ciphertext(parts[0])).real
    where = im2col_slots(tuple(shape), kernel, stride)
    image = np.zeros(int(np.prod(shape)))
    image[where] = slots[:len(where)]
    return image.reshape(shape)


def key_recovery_job(*, client_policy: str = "undefended", model_dir: str | Path | None = None, dataset: str | None = None,
                     index: int = 0, steps: int = DEFAULT_STEPS, layout: str = "batched", seed: int = 0,
                     data_root=None, download: bool = False, decrypt_input: bool = True,
                     log=lambda m: None) -> dict[str, Any]:
    """Run the attack once; returns a JSON-serialisable summary.

    model_dir: a polynomial (hecnn-style) checkpoint; None = an untrained hecnn seeded by ``seed``
    (the attack never uses the model's weights, only the result format). dataset/index: the
    victim's secret image (test split); None = a seeded uniform-random 1x28x28 image.
    Units: seconds; bytes; pixel error in [0, 1] pixel units.
    """
    from ..attacks.key_recovery import KeyRecoveryAttack, MaliciousServer
    from ..models.architectures import hecnn
    from ..oracles.ckks import CKKSClient, CKKSParameters, CKKSServer, poly_cnn
    from ..oracles.policies import parse_client_policy

    policy = parse_client_policy(client_policy, seed=seed)
    if model_dir is not None:
        from ..models.checkpoint import load_model
        loaded = load_model(model_dir)
        model, in_shape, arch = loaded.model, tuple(loaded.in_shape), loaded.arch
    else:
        torch.manual_seed(seed)
        model, in_shape, arch = hecnn().double(), (1, 28, 28), "hecnn (untrained)"
    if dataset is not None:
        from ..data import load_dataset
        data = load_dataset(dataset, "test", data_root, download)
        if not 0 <= int(index) < len(data):
            raise InvalidValueError(f"image index must be 0..{len(data) - 1}, got {index}")
        image = data.images[int(index)].double().numpy()
    else:
        image = np.random.default_rng(seed).uniform(0, 1, in_shape)
    params = CKKSParameters()
    poly = poly_cnn(model, in_shape, arch)
    params.check_depth(poly.depth, arch)

    t0 = time.perf_counter()
    client = CKKSClient(params, layout=layout, policy=policy, num_outputs=poly.fc2_weight.shape[0])
    client.set_conv_geometry(poly.conv_weight.shape[-1], poly.stride)
    context = client.context_message()
    input_message = client.encrypt(image)
    setup_client = time.perf_counter() - t0
    honest = CKKSServer(context, poly)                      # the model owner's own server code
    session = honest.open_session(input_message)
    template = honest.evaluate(session, np.zeros((1,) + in_shape))  # never sent: only its format is read
    del honest

    attacker = MaliciousServer(context)
    fmt = attacker.learn_format(template)
    client_seconds = [0.0]

    def answer(message: bytes) -> bytes:
        t = time.perf_counter()
        try:
            return client.answer(message)
        finally:
            client_seconds[0] += time.perf_counter() - t

    attack = KeyRecoveryAttack(attacker, session.session, steps=steps)
    result = attack.run(answer, log=log)
    summary: dict[str, Any] = {
        "client_policy": policy.spec, "flooding_sigma": policy.flooding_sigma, "arch": arch,
        "victim_image": f"{dataset} test #{index}" if dataset else f"uniform random (seed {seed})",
        "ckks": {**params.describe(poly.depth), "layout": layout, "result_scale": fmt["scale"]},
        "steps_per_component": steps, "planned_replies": 1 + 2 * steps, **result.summary(),
        "client_answer_seconds": round(client_seconds[0], 3), "client_setup_seconds": round(setup_client, 3),
        "attacker_holds_secret_key": False,
    }
    levels = len(attacker.moduli(attacker.first_parms))
    if result.s_ntt is None:
        summary.update(key_recovered=False, key_fraction_recovered=0.0, input_max_pixel_error=None)
        return summary
    true = _true_key_ntt(client, levels)
    fraction = float((true == result.s_ntt).mean())
    summary.update(key_recovered=fraction == 1.0, key_fraction_recovered=fraction)
    if decrypt_input and fraction == 1.0:
        t = time.perf_counter()
        stolen = _decrypt_input(attacker, result.s_ntt, input_message, in_shape, layout,
                                poly.conv_weight.shape[-1], poly.stride)
        summary["input_max_pixel_error"] = float(np.abs(stolen - image).max())
        summary["input_decrypt_seconds"] = round(time.perf_counter() - t, 3)
    else:
        summary["input_max_pixel_error"] = None
    return summary
