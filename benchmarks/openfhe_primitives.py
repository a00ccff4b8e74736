"""CKKS primitive costs, OpenFHE (source build) beside SEAL (TenSEAL's sealapi). Prints JSON.

    PYTHONPATH=/work/openfhe-build/python python benchmarks/openfhe_primitives.py \
        --out benchmarks/openfhe_primitives.json

OpenFHE is not a dependency of hesig: the registry's wheels are CPython-3.10-only, so this needs
openfhe-development v1.5.1 and openfhe-python v1.5.1.0 built from source by you (CMake; about
12 minutes on 2 cores, see the README's "OpenFHE bake-off"). ``--openfhe-path`` (default: the
OPENFHE_PYTHONPATH environment variable, else the normal import path) is put on sys.path.

Parameters, chosen as close to hesig's SEAL ones as OpenFHE allows (N 8192, primes
[31, 26 x 6, 31], scale 2^26, 4096 slots):
  OpenFHE: multiplicative depth 6, first mod 31 bits, scaling mod 26 bits, batch size 4096,
  FIXEDMANUAL rescaling (EvalMult relinearizes but does not rescale, like SEAL's evaluator),
  in three set-ups (``--setups``):
    * ``hybrid``    - the comparison set-up: ring dimension 8192, HYBRID key switching with 7
                      digits (one Q prime per digit, SEAL's decomposition), HEStd_NotSet. OpenFHE's
                      special modulus P is a 60-bit prime (AUXMODSIZE, not settable), so
                      log QP = 187 + 60 = 247 > 218 and OpenFHE refuses HEStd_128_classic at
                      N 8192; SEAL's special prime is 31 bits (log QP 218). So this set-up is
                      slightly below the HE-standard 128-bit bound; same Q as SEAL.
    * ``hybrid128`` - the same with HEStd_128_classic enforced: OpenFHE then picks N 16384.
    * ``bv``        - BV key switching (no special prime), HEStd_128_classic at N 8192 (Q fits);
                      with the default digit size its key-switching noise (~q_i * e) swamps a
                      2^26 scale: decryption after a rotation fails ("usable": false). Timed for
                      completeness only.
  SEAL: ts.context(CKKS, 8192, [31, 26 x 6, 31]), scale 2^26, through sealapi.

Each OpenFHE set-up runs in its own subprocess with OMP_NUM_THREADS = 1 and = 2 (the library
is built WITH_OPENMP); ``hybrid`` also once with OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE. SEAL runs single-threaded in its own subprocess. Every time is a median
over ``--reps`` repetitions (after 2 warm-up calls), in seconds; sizes are bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

N, SLOTS, DEPTH, FIRST_MOD, SCALE_MOD = 8192, 4096, 6, 31, 26
ROT_STEPS = list(range(1, 13))  # the 12 rotations (left by 1..12 slots)
DEFAULT_OPENFHE_PATH = os.environ.get("OPENFHE_PYTHONPATH")


def timed(fn, reps: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "reps": reps}


def message(seed: int = 0) -> list[float]:
    return np.random.default_rng(seed).uniform(-1, 1, SLOTS).tolist()


# ----------------------------------------------------------------------------- OpenFHE
#: OpenFHE set-ups: key switching, security level, ring dimension (0: OpenFHE picks), digits
OPENFHE_SETUPS = {
    "hybrid": ("HYBRID", "HEStd_NotSet", N, DEPTH + 1),
    "hybrid128": ("HYBRID", "HEStd_128_classic", 0, DEPTH + 1),
    "bv": ("BV", "HEStd_128_classic", N, None),
}


def openfhe_worker(setup: str, reps: int) -> dict:
    import openfhe as of

    ks, sec, ring, dnum = OPENFHE_SETUPS[setup]
    load0 = os.getloadavg()
    p = of.CCParamsCKKSRNS()
    if ring:
        p.SetRingDim(ring)
    p.SetMultiplicativeDepth(DEPTH)
    p.SetFirstModSize(FIRST_MOD)
    p.SetScalingModSize(SCALE_MOD)
    p.SetBatchSize(SLOTS)
    p.SetScalingTechnique(of.ScalingTechnique.FIXEDMANUAL)
    p.SetKeySwitchTechnique(getattr(of.KeySwitchTechnique, ks))
    p.SetSecurityLevel(getattr(of.SecurityLevel, sec))
    if dnum:
        p.SetNumLargeDigits(dnum)
    cc = of.GenCryptoContext(p)
    for f in (of.PKESchemeFeature.PKE, of.PKESchemeFeature.KEYSWITCH, of.PKESchemeFeature.LEVELEDSHE):
        cc.Enable(f)
    out: dict = {"library": "openfhe", "setup": setup, "key_switching": ks, "security_level": sec,
                 "scaling_technique": "FIXEDMANUAL", "ring_dimension": cc.GetRingDimension(),
                 "num_large_digits": dnum, "digit_size": None if dnum else "0 (default)",
                 "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
                 "omp_wait_policy_env": os.environ.get("OMP_WAIT_POLICY")}
    try:
        out["log2_Q"] = round(float(np.log2(cc.GetModulus())), 2)  # Q only (P not included)
    except Exception as e:  # getter not bound in every version
        out["log2_Q"] = f"n/a ({type(e).__name__})"

    kp = cc.KeyGen()
    cc.EvalMultKeyGen(kp.secretKey)
    out["relin_key_bytes"] = len(of.SerializeEvalMultKeyString(of.BINARY))
    cc.EvalRotateKeyGen(kp.secretKey, [1])
    out["rotation_key_bytes_one"] = len(of.SerializeEvalAutomorphismKeyString(of.BINARY))
    cc.ClearEvalAutomorphismKeys()
    cc.EvalRotateKeyGen(kp.secretKey, ROT_STEPS)
    out["rotation_keys_bytes_12"] = len(of.SerializeEvalAutomorphismKeyString(of.BINARY))

    x, y = message(0), message(1)
    pt = cc.MakeCKKSPackedPlaintext(x)
    pt2 = cc.MakeCKKSPackedPlaintext(y)
    ct = cc.Encrypt(kp.publicKey, pt)
    ct2 = cc.Encrypt(kp.publicKey, pt2)
    out["ciphertext_bytes"] = len(of.Serialize(ct, of.BINARY))
    out["ciphertext_level"] = ct.GetLevel()

    m = cc.GetCyclotomicOrder()
    t = {}
    t["encode"] = timed(lambda: cc.MakeCKKSPackedPlaintext(x), reps)
    t["encrypt_pk"] = timed(lambda: cc.Encrypt(kp.publicKey, pt), reps)
    t["rotate_1"] = timed(lambda: cc.EvalRotate(ct, 1), reps)
    t["rotate_12_plain"] = timed(lambda: [cc.EvalRotate(ct, s) for s in ROT_STEPS], reps)

    def hoisted():
        digits = cc.EvalFastRotationPrecompute(ct)
        return [cc.EvalFastRotation(ct, s, m, digits) for s in ROT_STEPS]

    t["rotate_12_hoisted"] = timed(hoisted, reps)
    t["fast_rotation_precompute"] = timed(lambda: cc.EvalFastRotationPrecompute(ct), reps)
    t["mult_relin"] = timed(lambda: cc.EvalMult(ct, ct2), reps)
    prod = cc.EvalMult(ct, ct2)
    t["rescale"] = timed(lambda: cc.Rescale(prod), reps)
    out["times"] = t

    # correctness of what was timed
    def err(c, want):
        try:
            r = cc.Decrypt(c, kp.secretKey)
            r.SetLength(SLOTS)
            return float(np.max(np.abs(np.array(r.GetRealPackedValue()) - want)))
        except RuntimeError as e:  # OpenFHE refuses to decode a too-noisy result
            return "decrypt failed: " + str(e).strip().split(":")[-1].strip()

    xs, ys = np.array(x), np.array(y)
    h = hoisted()
    out["check_max_abs_err"] = {
        "fresh": err(ct, xs),
        "rotate_5": err(cc.EvalRotate(ct, 5), np.roll(xs, -5)),
        "hoisted_rotate_5": err(h[4], np.roll(xs, -5)),
        "mult_rescale": err(cc.Rescale(cc.EvalMult(ct, ct2)), xs * ys),
    }
    out["usable"] = all(isinstance(v, float) and v < 0.05 for v in out["check_max_abs_err"].values())
    out["loadavg_before_after"] = [load0, os.getloadavg()]
    return out


# ----------------------------------------------------------------------------- SEAL
def seal_worker(reps: int) -> dict:
    import tenseal as ts
    import tenseal.sealapi as sa

    bits = [FIRST_MOD] + [SCALE_MOD] * DEPTH + [FIRST_MOD]
    load0 = os.getloadavg()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, N, coeff_mod_bit_sizes=bits)
    ctx.global_scale = 2.0 ** SCALE_MOD
    seal = ctx.seal_context().data
    kg = sa.KeyGenerator(seal, ctx.secret_key().data)
    enc = sa.CKKSEncoder(seal)
    encryptor = sa.Encryptor(seal, ctx.public_key().data)
    decryptor = sa.Decryptor(seal, ctx.secret_key().data)
    ev = sa.Evaluator(seal)
    scale = 2.0 ** SCALE_MOD
    tmp = tempfile.mkdtemp(prefix="ofhe-bench-")
    path = os.path.join(tmp, "obj")

    def size(obj) -> int:
        obj.save(path)
        return os.path.getsize(path)

    def compr_mode(obj) -> str:
        obj.save(path)
        with open(path, "rb") as fh:
            return {0: "none", 1: "zlib", 2: "zstd"}.get(fh.read(6)[5], "?")

    elts = lambda steps: [pow(3, s, 2 * N) for s in steps]  # noqa: E731  (left rotation by s)
    out: dict = {"library": "seal (tenseal %s sealapi)" % ts.__version__, "coeff_mod_bit_sizes": bits,
                 "scale": "2^26", "key_switching": "SEAL (one special prime, 31 bits)",
                 "security": "128-bit HE standard (218 bits for N 8192)", "threads": 1,
                 "note": "SEAL has no hoisted-rotation API; save() compresses (see *_compression)"}
    rk = sa.RelinKeys()
    kg.create_relin_keys(rk)
    out["relin_key_bytes"] = size(rk)
    out["relin_key_bytes_seeded"] = size(kg.create_relin_keys())
    g1 = sa.GaloisKeys()
    kg.create_galois_keys(elts([1]), g1)
    assert g1.has_key(3)
    out["rotation_key_bytes_one"] = size(g1)
    out["rotation_key_bytes_one_seeded"] = size(kg.create_galois_keys(elts([1])))
    g12 = sa.GaloisKeys()
    kg.create_galois_keys(elts(ROT_STEPS), g12)
    out["rotation_keys_bytes_12"] = size(g12)
    out["key_compression"] = compr_mode(rk)
    k = len(bits) - 1  # data primes; each key-switching key: k components x 2 polys x (k+1) primes
    out["relin_key_bytes_uncompressed_estimate"] = k * 2 * (k + 1) * N * 8

    x, y = message(0), message(1)
    pt, pt2 = sa.Plaintext(), sa.Plaintext()
    enc.encode(x, scale, pt)
    enc.encode(y, scale, pt2)
    ct, ct2 = sa.Ciphertext(), sa.Ciphertext()
    encryptor.encrypt(pt, ct)
    encryptor.encrypt(pt2, ct2)
    out["ciphertext_bytes"] = size(ct)
    out["ciphertext_compression"] = compr_mode(ct)
    out["ciphertext_bytes_uncompressed_estimate"] = 2 * ct.coeff_modulus_size() * N * 8
    out["ciphertext_towers"] = ct.coeff_modulus_size()

    dest = sa.Ciphertext()
    t = {}

    def encode():
        p = sa.Plaintext()
        enc.encode(x, scale, p)

    def encrypt():
        c = sa.Ciphertext()
        encryptor.encrypt(pt, c)

    def rot(s):
        d = sa.Ciphertext()
        ev.rotate_vector(ct, s, g12, d)
        return d

    def mult():
        d = sa.Ciphertext()
        ev.multiply(ct, ct2, d)
        ev.relinearize_inplace(d, rk)
        return d

    t["encode"] = timed(encode, reps)
    t["encrypt_pk"] = timed(encrypt, reps)
    t["rotate_1"] = timed(lambda: rot(1), reps)
    t["rotate_12_plain"] = timed(lambda: [rot(s) for s in ROT_STEPS], reps)
    t["mult_relin"] = timed(mult, reps)
    prod = mult()
    t["rescale"] = timed(lambda: ev.rescale_to_next(prod, dest), reps)
    out["times"] = t
    out["loadavg_before_after"] = [load0, os.getloadavg()]

    def dec(c):
        p = sa.Plaintext()
        decryptor.decrypt(c, p)
        return np.array(enc.decode_double(p))[:SLOTS]

    xs, ys = np.array(x), np.array(y)
    r = sa.Ciphertext()
    ev.rescale_to_next(mult(), r)
    out["check_max_abs_err"] = {
        "fresh": float(np.max(np.abs(dec(ct) - xs))),
        "rotate_5": float(np.max(np.abs(dec(rot(5)) - np.roll(xs, -5)))),
        "mult_rescale": float(np.max(np.abs(dec(r) - xs * ys))),
    }
    return out


# ----------------------------------------------------------------------------- driver
def run_worker(args, extra: list[str], threads: int, wait_policy: str | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    env["PYTHONPATH"] = os.pathsep.join(p for p in (args.openfhe_path, env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, os.path.abspath(__file__), "--reps", str(args.reps), *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-5:], "cmd": " ".join(extra), "threads": threads}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["wall_s_subprocess"] = round(time.perf_counter() - t0, 2)
    return out


def summary(res: dict) -> dict:
    """One flat row per (library, set-up, threads): the requested numbers."""
    rows = {}
    for name, r in res.items():
        if "times" not in r:
            rows[name] = r
            continue
        t = r["times"]
        rows[name] = {
            "ring_dimension": r.get("ring_dimension", N),
            "usable": r.get("usable", True),
            "encrypt_pk_s": t["encrypt_pk"]["median_s"],
            "ciphertext_bytes": r["ciphertext_bytes"],
            "relin_key_bytes": r["relin_key_bytes"],
            "rotation_key_bytes_one": r["rotation_key_bytes_one"],
            "rotate_1_s": t["rotate_1"]["median_s"],
            "rotate_12_plain_s": t["rotate_12_plain"]["median_s"],
            "rotate_12_hoisted_s": t.get("rotate_12_hoisted", {}).get("median_s"),
            "mult_relin_s": t["mult_relin"]["median_s"],
        }
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--threads", default="1,2", help="OMP_NUM_THREADS values for OpenFHE")
    ap.add_argument("--setups", default="hybrid,hybrid128,bv", help="OpenFHE set-ups: " + ", ".join(OPENFHE_SETUPS))
    ap.add_argument("--openfhe-path", default=DEFAULT_OPENFHE_PATH)
    ap.add_argument("--no-seal", action="store_true")
    ap.add_argument("--no-passive", dest="passive", action="store_false",
                    help="skip the extra hybrid run with OMP_WAIT_POLICY=PASSIVE at >1 thread")
    ap.add_argument("--worker", choices=["openfhe", "seal"], help=argparse.SUPPRESS)
    ap.add_argument("--setup", default="hybrid", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    if args.worker == "openfhe":
        print(json.dumps(openfhe_worker(args.setup, args.reps)))
        return {}
    if args.worker == "seal":
        print(json.dumps(seal_worker(args.reps)))
        return {}

    results: dict = {}
    if not args.no_seal:
        results["seal"] = run_worker(args, ["--worker", "seal"], 1)
    for setup in [k.strip() for k in args.setups.split(",") if k.strip()]:
        for th in [int(v) for v in args.threads.split(",")]:
            results[f"openfhe_{setup}_omp{th}"] = run_worker(args, ["--worker", "openfhe", "--setup", setup], th)
            if th > 1 and setup == "hybrid" and args.passive:
                # libgomp spins at barriers by default; on a shared, loaded CPU the spinning
                # thread competes with the worker. PASSIVE makes idle threads sleep.
                results[f"openfhe_{setup}_omp{th}_passive"] = run_worker(
                    args, ["--worker", "openfhe", "--setup", setup], th, "PASSIVE")

    env = dict(os.environ, PYTHONPATH=args.openfhe_path)
    ver = subprocess.run([sys.executable, "-c", "import openfhe,sys; print(openfhe.__file__)"],
                         env=env, capture_output=True, text=True)
    doc = {
        "benchmark": "openfhe_primitives",
        "parameters": {"ring_dimension": N, "slots": SLOTS, "multiplicative_depth": DEPTH,
                       "first_mod_bits": FIRST_MOD, "scaling_mod_bits": SCALE_MOD,
                       "rescaling": "FIXEDMANUAL (OpenFHE); manual rescale_to_next (SEAL)",
                       "rotations": ROT_STEPS, "reps": args.reps,
                       "timing": "median seconds of `reps` calls after 2 warm-ups; mult_relin = ct x ct + "
                                 "relinearization, no rescale; rotate_12_hoisted = 1 "
                                 "EvalFastRotationPrecompute + 12 EvalFastRotation"},
        "summary": summary(results),
        "results": results,
        "openfhe_module": ver.stdout.strip() or ver.stderr.strip()[-300:],
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "nproc": os.cpu_count(), "loadavg_at_end": os.getloadavg(),
                    "nice": os.nice(0)},
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return doc


if __name__ == "__main__":
    main()
