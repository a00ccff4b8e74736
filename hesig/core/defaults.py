"""The one source of every default and every choice list hesig offers.

Importable without torch, TenSEAL or matplotlib: the CLI builds its options from this module, so
``hesig --help`` stays fast. The heavy modules import their defaults from here too; where a
heavy module keeps a registry (architectures, direction families), ``tests/test_layout.py``
checks that its keys equal the names listed here.
"""

from __future__ import annotations

# -- data ---------------------------------------------------------------------------------------
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
#: Fixed halves of a training split (hesig.data.train_half): all, or one of two disjoint halves.
HALVES = ("all", "a", "b")
SPLITS = ("train", "test")
#: What a fingerprint file records as dataset / split when a victim encrypted images of its own
#: (``hesig victim --images FILE``): nothing downstream can load them, the file says so.
PRIVATE_IMAGES = ("images-file", "file")

# -- models -------------------------------------------------------------------------------------
ARCHITECTURES = ("lenet5", "hecnn", "mlp", "cifar_cnn", "bn_cnn")
#: Epochs that reach the accuracy targets on MNIST (lenet5 >= 99.0%, hecnn >= 98.0%); others 10.
EPOCHS_BY_ARCH = {"lenet5": 12, "hecnn": 12, "mlp": 40}
EPOCHS_OTHER_ARCH = 10
CLASSIFIER_TRAINING = {"batch_size": 128, "lr": 2e-3}
DEVICES = ("auto", "cpu", "cuda")

# -- the perturbation-signature attack -----------------------------------------------------------
FAMILIES = ("random", "rademacher", "centroid", "pca", "fgsm", "pgd", "uap", "mix", "learned")
#: The learned query points (hesig.signature.directions.learned): epochs over the owner's images,
#: the weight of the fair-coin term (0 lets 87 % of the bits become flips: results/frontier/learned.json),
#: and the owner images whose median ε starts each point.
LEARN_EPOCHS = 2
LEARN_BALANCE = 0.1
LEARN_INIT_ROWS = 500
DIRECTION_COUNT = 100
#: Search range (0, ε_max] in L2 units of unit-norm directions. With 30, a third of the
#: MNIST/lenet5 pairs were censored and the flipping ε piled up just below 30 (99th percentile
#: 29.8), so the range was cutting information off; 60 costs one more bisection step.
EPS_MAX = 60.0
#: Largest ε_max accepted: images live in [0, 1]^d, so no two are further apart than sqrt(d)
#: (55 for CIFAR-10); beyond this a perturbation only overflows float32.
EPS_MAX_LIMIT = 1e4
#: Bisection stops when hi - lo <= max(atol, rtol * hi).
RTOL = 1e-2
ATOL = 0.0
#: Coarse first-crossing grid points G (the paper's precision: 8 points, rtol 1e-2).
COARSE_POINTS = 8
#: Coarse grid spacing: evenly spaced (the paper's) or log-spaced from eps_min = ε_max·2^-16
#: (60 -> 9.2e-4, far below any ε seen on MNIST; with 40 points the ratio r = 1.33 lets one
#: 40-point round reach rtol 1e-2, since it needs r - 1 <= 41·rtol).
COARSE_GRIDS = ("linear", "geometric")
COARSE_GRID = "linear"
GEOMETRIC_EPS_MIN_FRACTION = 2.0 ** -16
POINTS_PER_ROUND = 1
MAX_SEARCH_ROUNDS = 200
#: Rows per atomically saved fingerprint chunk (CKKS: every image is its own chunk). On a GPU a
#: 1000-row plaintext chunk is ~0.1 s of work, so its fixed costs (oracle setup, the atomic write)
#: and its small late rounds would dominate: "<kind>-cuda" is the default there.
CHUNK_SIZE = {"plaintext": 1000, "plaintext-cuda": 10000, "ckks": 1}
#: Decoder (DCGAN generator) width and training.
NGF = 32
DECODER_TRAINING = {"epochs": 40, "batch_size": 128, "lr": 2e-3, "patience": 5, "val_fraction": 0.1}
#: Decoder losses: "mse" (the paper's L2, the default) and "ssim-l1", 0.84·(1 - SSIM) + 0.16·L1
#: (Zhao, Gallo, Frosio & Kautz 2017, "Loss functions for image restoration with neural networks"),
#: SSIM as scored (interior, 11 x 11 Gaussian, σ 1.5, data range 1): a loss that fits the metric.
DECODER_LOSSES = ("mse", "ssim-l1")
#: Decoder input encodings of ε (hesig.signature.decoders.features): standardised log ε (the
#: default), or each ε's mid-rank among the training fingerprints (for the prior-guided search).
DECODER_FEATURES = ("log", "rank")
#: The decoder's fully connected lift before its projection (hesig train-decoder --mlp N): N hidden
#: layers of this width (Linear, BatchNorm, ReLU); 0 is the paper's DCGAN generator, a single
#: linear projection of the fingerprint. MAX_DECODER_MLP bounds N.
DECODER_MLP_WIDTH = 1024
MAX_DECODER_MLP = 8
MAX_DECODER_MLP_WIDTH = 16384
#: Residual blocks at the decoder's output resolution (hesig train-decoder --res N; issue 24's
#: "residual blocks" capacity lever); 0 is the paper's generator. MAX_DECODER_RES bounds N.
MAX_DECODER_RES = 8
SSIM_L1_ALPHA = 0.84

# -- oracles ------------------------------------------------------------------------------------
ORACLES = ("plaintext", "ckks")
#: Who computes a job's chunks (hesig.jobs.executor): this process, or a Ray cluster (the 'ray' extra).
EXECUTORS = ("in-process", "ray")
CKKS_LAYOUTS = ("batched", "compact")
#: How the client encrypts and sends keys: "seeded" (symmetric encryption under its secret key,
#: SEAL's seeded serialization: half the bytes of every ciphertext and key, issue 22) or
#: "public-key" (hesig's original path, kept as the benchmark baseline). The first is the default.
CKKS_ENCRYPTIONS = ("seeded", "public-key")
#: Processes each CKKS party splits its work on one image over (TenSEAL holds the GIL, so threads
#: cannot): the client's encryption (hesig.oracles.ckks.client) and the server's setup and
#: evaluations (hesig.oracles.ckks.parallel). 1: the calling process alone. Results do not depend on it.
CKKS_PROCESSES = 1
#: The most processes accepted (hecnn's server splits 64 output positions and 64 fc1 units).
CKKS_PROCESSES_MAX = 64
#: Peak resident memory of a CKKS fingerprint job, any chunk size (benchmarks/ckks_memory.json:
#: 3,225 MB at chunk size 1, 3,222 MB at 4, batched layout, N 8192). A machine with less memory
#: available is refused before any work.
CKKS_PEAK_MB = 3300

# -- the service (hesig serve / hesig victim) -----------------------------------------------------
SERVE_HOST = "127.0.0.1"
SERVE_PORT = 8732
#: Largest upload the server accepts, MB (a batched 28x28 input is ~374 MB; a context with the
#: compact layout's Galois keys ~100 MB).
SERVE_MAX_UPLOAD_MB = 512
#: Victim sessions the server holds at once (each holds ~300 MB of ciphertexts while it runs).
SERVE_MAX_SESSIONS = 8
#: Homomorphic computations run at once across all sessions (a session setup peaks at ~3 GB).
SERVE_MAX_ACTIVE = 1
#: A session whose victim sent nothing for this long is ended (its unfinished image is not saved).
SERVE_VICTIM_TIMEOUT_S = 120.0
#: Seconds an upload may stall between two received pieces before it is dropped.
SERVE_STALL_TIMEOUT_S = 60.0
#: Longest long-poll for the next task, seconds.
SERVE_POLL_S = 20.0
#: Victim: attempts per request on a dropped connection or a restarting server (backoff 0.5 s
#: doubling to 5 s: about a minute in all), and session re-openings after the server restarted.
VICTIM_RETRIES = 15
VICTIM_REOPENS = 5

# -- the direction study ------------------------------------------------------------------------
#: Families the study compares by default. ``fgsm`` is left out of the default grid: its
#: directions are sign vectors of single training samples (close to Rademacher noise shaped by
#: one image) and it is ~100x slower to build at 200 directions than the others.
STUDY_FAMILIES = ("random", "rademacher", "centroid", "pca", "pgd", "uap", "mix")
#: The mix family compared by default: half principal components, half class-boundary walks.
STUDY_MIX = "pca:1,pgd:1"
STUDY_COUNTS = (10, 25, 50, 100, 200)
STUDY_PRECISIONS = ((COARSE_POINTS, RTOL),)
#: The prior-guided search's prior (hesig.signature.prior_search): the owner's first PRIOR_ROWS
#: training images, fingerprinted at the paper's precision (a study's precision "prior:M").
PRIOR_ROWS = 2000
PRIOR = "prior"
#: The prior-guided search's most queries per pair (2^M - 1 quantile knots per direction).
MAX_PRIOR_STEPS = 12
STUDY_SCALE = {"n_train": 3000, "n_test": 500, "decoder_ngf": 16, "decoder_epochs": 15, "decoder_patience": 4}

# -- He et al.'s split-inference attacks ----------------------------------------------------------
SPLIT_ATTACKS = ("rmle", "inverse-network", "shadow")
#: Black-box query sets (Algorithm 2, GenerateTrainingSet): the target's training set, a disjoint
#: set from the same distribution (the other half of the training split), standard Gaussian noise.
QUERY_SETS = ("train", "disjoint", "gaussian")
#: Query-free adversary's labelled data: the target's training set or the disjoint half.
SHADOW_DATA = ("same", "disjoint")
INVERSE_DESIGNS = ("auto", "paper")
SHADOW_STRUCTURES = ("same", "different")
#: He et al. §4.1: shallow splits 500 Adam steps at 1e-2; see results/collab_inference for ours.
RMLE = {"iterations": 500, "lr": 1e-2, "tv_weight": 0.0, "tv_beta": 1.0, "init_noise": 0.0, "clip": True}
INVERSE_TRAINING = {"epochs": 20, "batch_size": 128, "lr": 1e-3}
SHADOW_TRAINING = {"epochs": 5, "batch_size": 128, "lr": 1e-3}
RMLE_CHUNK_SIZE = 1000

# -- Malekzadeh & Gündüz's vicious classifiers ---------------------------------------------------
VICIOUS_RELEASES = ("logits", "softmax")
#: Eq. 3 weights as we read their "1/15/3" (CE, SSIM, Huber); see results/vicious.
VICIOUS_LOSS = {"ssim_weight": 15.0, "huber_weight": 3.0, "huber_delta": 1.0}
VICIOUS_TRAINING = {"epochs": 50, "batch_size": 250, "lr": 1e-3, "valid_fraction": 0.1}
VICIOUS_NGF = 16
VICIOUS_IMAGE_SIZE = 32
RISK_REGULARISATIONS = ("pinv", "shrinkage")

# -- the defense study (hesig study-defenses) ---------------------------------------------------------
#: Defense (client-policy spec added to 'strict'; 'none': strict alone) -> the attackers run
#: against it. 'standard' is the paper's search; every attacker's decoder is trained through the
#: defense (adaptive), the standard search's also without it (non-adaptive). The adaptive searches
#: know the defense and its strength: a majority vote, probabilistic bisection at its bit error
#: rate, a low-flip search for the detector, a search that fits an evaluation budget. Sized to
#: run on 2 CPU cores in about an hour; add rows with --grid (finished cells are reused).
DEFENSE_GRID = (
    ("none", ("standard", "low-flip:0.1")),
    ("rr:0.02", ("standard",)),
    ("rr:0.1", ("standard", "vote:5", "bayes:0.1")),
    ("bdpl:0.4@1", ("standard", "bayes:0.4")),
    ("flooding:2", ("standard",)),
    ("rounding:0", ("standard",)),
    ("input-noise:0.2", ("standard",)),
    ("evaluations:300", ("budgeted:300",)),
    ("evaluations:1000", ("budgeted:1000",)),
)
#: Scale: the attacker's own fingerprinted training images, the victims, honest sessions per kind
#: and per set (three sets: detector calibration, threshold, test), the direction set. The
#: decoder must beat the class-mean baseline in SSIM undefended, or "pushed to the class mean"
#: means nothing: on MNIST/hecnn, 3,000 images x 15 epochs gave SSIM 0.492 against the class
#: mean's 0.481 (results/directions_study, random k = 100); 6,000 x 20 gives 0.718 against 0.489
#: (results/defenses, the undefended cell).
DEFENSE_SCALE = {"n_train": 6000, "n_test": 200, "n_honest": 100, "family": "random", "count": 100,
                 "decoder_ngf": 16, "decoder_epochs": 20, "decoder_patience": 4}
#: The detector's operating point (false-positive rate on honest traffic).
DETECTOR_FPR = 0.01
