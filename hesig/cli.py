"""The ``hesig`` command line: parse options, call a job of :mod:`hesig.jobs`, print its summary.

Every user error ends in one line on stderr and a non-zero exit (2; 3 for an exhausted query
budget; 130 when interrupted), never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from . import __version__
from .core import defaults as D
from .core.errors import HesigError

# Only torch-free modules are imported here (core.defaults, core.errors): every command imports
# its job inside the function, so `hesig --help` does not pay for torch, TenSEAL or matplotlib.


def _print_summary(summary: dict) -> None:
    click.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))


def data_options(fn):
    fn = click.option("--download", is_flag=True, help="Let torchvision download a missing dataset.")(fn)
    fn = click.option("--data-root", type=click.Path(file_okay=False), default=None,
                      help="Dataset folder (default: $HESIG_DATA, else a per-user cache directory). A named "
                           "folder without the dataset is an error; the cache copy stands in only when none is named.")(fn)
    return fn


def device_option(fn):
    return click.option("--device", default="auto", show_default=True,
                        type=click.Choice(D.DEVICES), help="Where models run.")(fn)


def force_option(fn):
    return click.option("--force", is_flag=True,
                        help="Replace an existing --out that holds another job's artifact (never one of the inputs).")(fn)


def quiet_option(fn):
    return click.option("--quiet", is_flag=True, help="No progress bars.")(fn)


def executor_options(fn):
    """``--executor`` and the Ray options. The command receives one ``executor`` argument, built
    from them (Ray is imported only when asked for) and closed when the command returns."""
    @functools.wraps(fn)
    def command(*args, executor_name, ray_address, workers, worker_cpus, worker_gpus, **kwargs):
        from .jobs.executor import make_executor
        executor = make_executor(executor_name, address=ray_address, workers=workers, cpus_per_worker=worker_cpus,
                                 gpus_per_worker=worker_gpus)
        try:
            return fn(*args, executor=executor, **kwargs)
        finally:
            executor.close()
    for option in reversed((
            click.option("--executor", "executor_name", type=click.Choice(D.EXECUTORS), default="in-process",
                         show_default=True, help="Who computes the independent chunks (a study's cells too): "
                                                 "in-process, or ray (the 'ray' extra; README: 'Scale out on Ray')."),
            click.option("--ray-address", default=None, help="With --executor ray: auto (the cluster this machine "
                                                             "joined), HOST:PORT, or local [default: local]."),
            click.option("--workers", type=int, default=None,
                         help="With --executor ray: chunks computed at once [default: as many as the cluster fits]."),
            click.option("--worker-cpus", type=float, default=None, help="With --executor ray: CPUs per worker [default: 1]."),
            click.option("--worker-gpus", type=float, default=None,
                         help="With --executor ray: GPUs per worker (plaintext: 1, or a share like 0.25) [default: 0]."))):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hesig")
def cli():
    """Measure how much of a secret input leaks through a label-change oracle."""


@cli.command("train-model")
@click.option("--dataset", type=click.Choice(D.DATASETS), default="mnist", show_default=True)
@click.option("--arch", type=click.Choice(D.ARCHITECTURES), default="lenet5", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Checkpoint directory.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="[default: per arch: " + ", ".join(f"{a} {D.EPOCHS_BY_ARCH.get(a, D.EPOCHS_OTHER_ARCH)}"
                                                   for a in D.ARCHITECTURES) + "]")
@click.option("--batch-size", type=click.IntRange(min=1), default=D.CLASSIFIER_TRAINING["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D.CLASSIFIER_TRAINING["lr"], show_default=True)
@click.option("--train-half", type=click.Choice(D.HALVES), default="all", show_default=True,
              help="Train on one fixed half of the train split (a), leaving the other (b) to an adversary "
                   "with 'a different set from the same distribution'.")
@click.option("--seed", type=int, default=0, show_default=True)
@force_option
@data_options
@device_option
@quiet_option
def train_model_cmd(dataset, arch, out, epochs, batch_size, lr, train_half, seed, force, data_root, download, device, quiet):
    """Train a target (or evaluator) classifier; writes model.safetensors + model.json."""
    from .jobs.models import train_model_job
    _print_summary(train_model_job(dataset, arch, out, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                                   train_half=train_half, force=force,
                                   data_root=data_root, download=download, device=device, progress=not quiet))


def learn_options(with_defaults: bool | None):
    """The learned family's options (hesig.signature.directions.learned); defaults shown where the
    command always passes them (a study), None where they apply to one family only."""
    def default(value):
        return value if with_defaults else None

    def wrap(fn):
        for option in reversed((
                click.option("--learn-epochs", type=click.IntRange(min=1), default=default(D.LEARN_EPOCHS),
                             show_default=bool(with_defaults), help="Learned family: epochs over the owner's images"
                                                                    + ("." if with_defaults else f" [default: {D.LEARN_EPOCHS}].")),
                click.option("--learn-balance", type=click.FloatRange(min=0, max=1e6), default=default(D.LEARN_BALANCE),
                             show_default=bool(with_defaults), help="Learned family: weight of the term that keeps "
                                                                    "each bit a fair coin" + ("." if with_defaults else
                                                                    f" [default: {D.LEARN_BALANCE}].")),
                click.option("--learn-images", type=click.IntRange(min=2), default=None,
                             help="Learned family: the owner's first N training images [default: all]."))):
            fn = option(fn)
        return fn
    return wrap


@cli.command("directions")
@click.option("--family", type=click.Choice(D.FAMILIES), default="random", show_default=True,
              help="random, rademacher: data-free; centroid, pca: from the training set; fgsm, pgd, uap: "
                   "adversarial, from --model; mix: see --mix; learned: query points (direction and ε) trained "
                   "on the training set with --model, each asked once by hesig fingerprint.")
@click.option("--count", type=click.IntRange(min=1), default=D.DIRECTION_COUNT, show_default=True)
@click.option("--dataset", type=click.Choice(D.DATASETS), default="mnist", show_default=True,
              help="Input shape, and the training split for data-driven families.")
@click.option("--model", "model_dir", type=click.Path(), default=None,
              help="Model checkpoint directory (needed by fgsm, pgd, uap, learned).")
@click.option("--mix", default=None, help="For --family mix: weighted families, e.g. 'random:1,centroid:1'.")
@learn_options(None)
@click.option("--out", type=click.Path(dir_okay=False), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@force_option
@data_options
@device_option
@quiet_option
def directions_cmd(family, count, dataset, model_dir, mix, learn_epochs, learn_balance, learn_images, out, seed, force,
                   data_root, download, device, quiet):
    """Make a seeded, hashed direction set (unit L2 norm).

    Every family but 'learned' is prefix-consistent: the first k of a larger set equal the set of k.
    """
    from .jobs.models import directions_job
    learn = {k: v for k, v in (("learn_epochs", learn_epochs), ("learn_balance", learn_balance),
                               ("learn_images", learn_images)) if v is not None}
    if learn and family != "learned":
        raise click.UsageError(f"--{next(iter(learn)).replace('_', '-')} only applies to --family learned")
    _print_summary(directions_job(family, count, out, dataset=dataset, seed=seed, model_dir=model_dir, mix=mix,
                                  device=device, force=force, data_root=data_root, download=download,
                                  progress=not quiet, **learn))


@cli.command("fingerprint")
@click.option("--oracle", type=click.Choice(D.ORACLES), default="plaintext", show_default=True)
@click.option("--model", "model_dir", type=click.Path(), required=True, help="Target model checkpoint directory.")
@click.option("--directions", "directions_file", type=click.Path(), required=True)
@click.option("--dataset", type=click.Choice(D.DATASETS), default="mnist", show_default=True)
@click.option("--split", type=click.Choice(D.SPLITS), default="test", show_default=True)
@click.option("--indices", default=None, help="Subset of the split: A:B or i,j,k (default: all).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Fingerprint file (.safetensors).")
@click.option("--eps-max", type=click.FloatRange(min=0, min_open=True, max=D.EPS_MAX_LIMIT), default=D.EPS_MAX, show_default=True,
              help="Search range (0, eps_max] in L2 units.")
@click.option("--rtol", type=click.FloatRange(min=0, max=1, max_open=True), default=D.RTOL, show_default=True)
@click.option("--atol", type=click.FloatRange(min=0), default=D.ATOL, show_default=True)
@click.option("--coarse-points", type=click.IntRange(min=1), default=D.COARSE_POINTS, show_default=True)
@click.option("--coarse-grid", type=click.Choice(D.COARSE_GRIDS), default=D.COARSE_GRID, show_default=True,
              help="Coarse points evenly spaced, or log-spaced from --eps-min (one refinement round reaches rtol).")
@click.option("--eps-min", type=click.FloatRange(min=0, min_open=True), default=None,
              help="First point of a geometric grid [default: eps_max * 2^-20].")
@click.option("--points-per-round", default="1", show_default=True, help="Integer >= 1 or 'auto'.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None,
              help="Rows per atomically saved chunk [default: 1000; 10000 on a GPU; 1 with --oracle=ckks].")
@click.option("--prior", type=click.Path(dir_okay=False), default=None,
              help="Prior-guided search: the owner's fingerprint file of its own data (train split, same model and "
                   "directions, the plain search); each pair is asked at its quantiles instead of the grid and bisection.")
@click.option("--prior-steps", type=click.IntRange(1, D.MAX_PRIOR_STEPS), default=None,
              help="Queries per pair of the prior-guided search (exactly; needs --prior).")
@click.option("--ckks-layout", type=click.Choice(D.CKKS_LAYOUTS), default="batched", show_default=True,
              help="CKKS upload: one ciphertext per pixel (batched) or one im2col ciphertext + Galois keys (compact).")
@click.option("--ckks-encryption", type=click.Choice(D.CKKS_ENCRYPTIONS), default=D.CKKS_ENCRYPTIONS[0], show_default=True,
              help="CKKS client: symmetric encryption with seeded (half-size) ciphertexts and keys, or the original public-key path.")
@click.option("--ckks-processes", type=click.IntRange(min=1, max=D.CKKS_PROCESSES_MAX), default=D.CKKS_PROCESSES,
              show_default=True, help="Processes the CKKS client's encryption and the server's work on each image "
                                      "are split over (batched layout; same results).")
@click.option("--budget", type=click.IntRange(min=1), default=None, help="Total oracle query budget.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Oracle batch (default: 512 CPU, 65536 GPU).")
@click.option("--client-policy", default=None,
              help="The victim client's policy: undefended, strict, flooding:SIGMA|auto, rounding:DIGITS, budget:N, "
                   "fresh-keys, rr:P, bdpl:P@MARGIN, input-noise:SIGMA (plaintext only), evaluations:N, joined with '+' "
                   "[default: ckks strict+budget:1+fresh-keys, which stops the paper's search (not a one-result grid, "
                   "see results/defenses); plaintext: the plain bit]. 'strict' measures the attack on a client without "
                   "a reply budget.")
@executor_options
@force_option
@data_options
@device_option
@quiet_option
def fingerprint_cmd(oracle, model_dir, directions_file, dataset, split, indices, out, eps_max, rtol, atol,
                    coarse_points, coarse_grid, eps_min, points_per_round, prior, prior_steps, chunk_size, ckks_layout, ckks_encryption,
                    ckks_processes, budget, batch_size, force, data_root, download, device, quiet, client_policy, executor):
    """Fingerprint a dataset split through the oracle; rerun the same command to resume."""
    from .jobs.fingerprint import fingerprint_job
    ppr = points_per_round if points_per_round == "auto" else _int_option(points_per_round, "--points-per-round")
    _print_summary(fingerprint_job(model_dir, directions_file, dataset, split, out, oracle=oracle, indices=indices,
                                   eps_max=eps_max, rtol=rtol, atol=atol, coarse_points=coarse_points,
                                   coarse_grid=coarse_grid, eps_min=eps_min, points_per_round=ppr, chunk_size=chunk_size, budget=budget,
                                   batch_size=batch_size, device=device, data_root=data_root, download=download,
                                   ckks_layout=ckks_layout, ckks_encryption=ckks_encryption, client_policy=client_policy,
                                   ckks_processes=ckks_processes, prior=prior, prior_steps=prior_steps,
                                   executor=executor, force=force, progress=not quiet))


@cli.command("serve")
@click.option("--model", "model_dir", type=click.Path(), required=True, help="Target model (polynomial: hecnn).")
@click.option("--directions", "directions_file", type=click.Path(), required=True)
@click.option("--runs", type=click.Path(file_okay=False), required=True,
              help="Folder for the jobs' run stores and fingerprint files (one per victim job).")
@click.option("--host", default=D.SERVE_HOST, show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=D.SERVE_PORT, show_default=True, help="0: any free port.")
@click.option("--port-file", type=click.Path(dir_okay=False), default=None, help="Write the bound port here.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="A bearer token every request must carry (read from this file, never from the command line).")
@click.option("--eps-max", type=click.FloatRange(min=0, min_open=True, max=D.EPS_MAX_LIMIT), default=D.EPS_MAX, show_default=True)
@click.option("--rtol", type=click.FloatRange(min=0, max=1, max_open=True), default=D.RTOL, show_default=True)
@click.option("--atol", type=click.FloatRange(min=0), default=D.ATOL, show_default=True)
@click.option("--coarse-points", type=click.IntRange(min=1), default=D.COARSE_POINTS, show_default=True)
@click.option("--coarse-grid", type=click.Choice(D.COARSE_GRIDS), default=D.COARSE_GRID, show_default=True,
              help="Coarse points evenly spaced, or log-spaced from --eps-min (one refinement round reaches rtol).")
@click.option("--eps-min", type=click.FloatRange(min=0, min_open=True), default=None,
              help="First point of a geometric grid [default: eps_max * 2^-20].")
@click.option("--points-per-round", default="1", show_default=True, help="Integer >= 1 or 'auto'.")
@click.option("--max-upload-mb", type=click.IntRange(1, 16384), default=D.SERVE_MAX_UPLOAD_MB, show_default=True)
@click.option("--max-sessions", type=click.IntRange(1, 1024), default=D.SERVE_MAX_SESSIONS, show_default=True)
@click.option("--max-active", type=click.IntRange(1, 64), default=D.SERVE_MAX_ACTIVE, show_default=True,
              help="Homomorphic computations at once across sessions (memory: ~3 GB each at setup).")
@click.option("--victim-timeout", type=click.FloatRange(1, 86400), default=D.SERVE_VICTIM_TIMEOUT_S, show_default=True,
              help="Seconds of silence after which a victim's session ends.")
@click.option("--ckks-processes", type=click.IntRange(min=1, max=D.CKKS_PROCESSES_MAX), default=D.CKKS_PROCESSES,
              show_default=True, help="Processes each image's homomorphic work is split over (batched layout; same results).")
@click.option("--prior", type=click.Path(dir_okay=False), default=None,
              help="Prior-guided search: the owner's fingerprint file of its own data (as for hesig fingerprint --prior).")
@click.option("--prior-steps", type=click.IntRange(1, D.MAX_PRIOR_STEPS), default=None,
              help="Queries per pair of the prior-guided search (exactly; needs --prior).")
def serve_cmd(model_dir, directions_file, runs, host, port, port_file, token_file, eps_max, rtol, atol, coarse_points,
              coarse_grid, eps_min, points_per_round, max_upload_mb, max_sessions, max_active, victim_timeout, ckks_processes,
              prior, prior_steps):
    """The model owner's encrypted-inference server: victims upload public contexts and ciphertexts
    over HTTP, the server fingerprints their inputs (the attack) into --runs. Ctrl-C stops it;
    restarting it on the same --runs resumes every job when its victim comes back."""
    from .service.hub import ServeSettings
    from .service.run import read_token, serve
    from .signature.search import BoundarySearch
    ppr = points_per_round if points_per_round == "auto" else _int_option(points_per_round, "--points-per-round")
    search = BoundarySearch(eps_max, coarse_points=coarse_points, points_per_round=ppr, atol=atol, rtol=rtol,
                            grid=coarse_grid, eps_min=eps_min)
    if (prior is None) != (prior_steps is None):
        raise click.UsageError("the prior-guided search needs both --prior and --prior-steps")
    settings = ServeSettings(Path(model_dir), Path(directions_file), Path(runs), search, token=read_token(token_file),
                             prior=Path(prior) if prior else None, prior_steps=prior_steps,
                             max_upload_bytes=max_upload_mb << 20, max_sessions=max_sessions, max_active=max_active,
                             victim_timeout=victim_timeout, stall_timeout=D.SERVE_STALL_TIMEOUT_S, processes=ckks_processes)
    serve(settings, host, port, port_file)


@cli.command("victim")
@click.option("--server", required=True, help="The server's URL, e.g. http://127.0.0.1:8732")
@click.option("--dataset", type=click.Choice(D.DATASETS), default=None, help="Take the secret images from this dataset...")
@click.option("--split", type=click.Choice(D.SPLITS), default="test", show_default=True)
@click.option("--images", "images_file", type=click.Path(dir_okay=False), default=None,
              help="...or from a safetensors file holding 'images' [n, C, H, W] in [0, 1].")
@click.option("--indices", default=None, help="Subset: A:B or i,j,k (default: all).")
@click.option("--client-policy", default=None,
              help="The client's policy (default: strict+budget:1+fresh-keys, which answers one result per key and "
                   "so stops a fingerprint; 'strict' answers every valid result).")
@click.option("--ckks-layout", type=click.Choice(D.CKKS_LAYOUTS), default="batched", show_default=True)
@click.option("--ckks-processes", type=click.IntRange(min=1, max=D.CKKS_PROCESSES_MAX), default=D.CKKS_PROCESSES,
              show_default=True, help="Processes the client's encryption of each image is split over (its own helpers).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None, help="The server's bearer token.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=".hesig-victim", show_default=True,
              help="Where the victim keeps its secret job key until the job is done (to resume after a restart).")
@click.option("--retries", type=click.IntRange(0, 100), default=D.VICTIM_RETRIES, show_default=True,
              help="Attempts per request when the connection drops or the server restarts.")
@click.option("--prefetch/--no-prefetch", default=True, show_default=True,
              help="Encrypt the next image while the server evaluates the current one (one more encrypted image "
                   "in memory).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the summary JSON here.")
@data_options
@quiet_option
def victim_cmd(server, dataset, split, images_file, indices, client_policy, ckks_layout, ckks_processes, token_file,
               state_dir, retries, prefetch, out, data_root, download, quiet):
    """The data owner: encrypts its images under its own CKKS key, sends ciphertexts to --server, and
    answers each result with the bits its client policy allows. Rerun the same command to resume."""
    from .service.run import read_token, victim
    _print_summary(victim(server, dataset=dataset, split=split, indices=indices, images_file=images_file,
                          data_root=data_root, download=download, policy=client_policy, layout=ckks_layout,
                          token=read_token(token_file), state_dir=state_dir, retries=retries, out=out, prefetch=prefetch,
                          processes=ckks_processes,
                          log=lambda m: None if quiet else click.echo(f"hesig victim: {m}", err=True)))


@cli.command("ckks-params")
@click.option("--model", "model_dir", type=click.Path(), default=None,
              help="Also check a model checkpoint's multiplicative depth against the parameters.")
@data_options
@device_option
@quiet_option
def ckks_params_cmd(model_dir, data_root, download, device, quiet):
    """Print the CKKS parameters, depth budget and security level the encrypted oracle uses.

    It reads no dataset and runs no model on a device: --data-root, --download, --device and --quiet
    are accepted so that every command takes the common options, and have no effect here.
    """
    from .jobs.fingerprint import ckks_params_job
    _print_summary(ckks_params_job(model_dir))


@cli.command("train-decoder")
@click.option("--fingerprints", "fingerprints_file", type=click.Path(), required=True,
              help="Fingerprints of the attacker's training images.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Decoder checkpoint directory.")
@click.option("--epochs", type=click.IntRange(min=1), default=D.DECODER_TRAINING["epochs"], show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=D.DECODER_TRAINING["patience"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=D.DECODER_TRAINING["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D.DECODER_TRAINING["lr"], show_default=True)
@click.option("--ngf", type=click.IntRange(min=4), default=D.NGF, show_default=True,
              help="Decoder width; training cost grows ~ngf^2.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=D.DECODER_TRAINING["val_fraction"], show_default=True)
@click.option("--loss", type=click.Choice(D.DECODER_LOSSES), default=D.DECODER_LOSSES[0], show_default=True,
              help="mse: the paper's L2; ssim-l1: 0.84·(1 - SSIM) + 0.16·L1, a loss that fits the scored SSIM.")
@click.option("--features", "features", type=click.Choice(D.DECODER_FEATURES), default=D.DECODER_FEATURES[0],
              show_default=True, help="The decoder's encoding of ε: standardised log ε, or its mid-rank among the "
                                      "training fingerprints (the quantile level, for the prior-guided search).")
@click.option("--mlp", type=click.IntRange(0, D.MAX_DECODER_MLP), default=0, show_default=True,
              help=f"Fully connected hidden layers (width {D.DECODER_MLP_WIDTH}) before the decoder's projection; "
                   "0: the paper's DCGAN generator.")
@click.option("--res", type=click.IntRange(0, D.MAX_DECODER_RES), default=0, show_default=True,
              help="Residual blocks (two 3x3 convolutions each) at full resolution before the decoder's output "
                   "convolution; 0: the paper's DCGAN generator.")
@click.option("--seed", type=int, default=0, show_default=True)
@force_option
@data_options
@device_option
@quiet_option
def train_decoder_cmd(fingerprints_file, out, epochs, patience, batch_size, lr, ngf, val_fraction, loss, features, mlp,
                      res, seed, force, data_root, download, device, quiet):
    """Train the DCGAN-generator decoder on (E_x, x) pairs (L2 loss, or --loss ssim-l1)."""
    from .jobs.decoder import train_decoder_job
    _print_summary(train_decoder_job(fingerprints_file, out, epochs=epochs, batch_size=batch_size, lr=lr, ngf=ngf,
                                     patience=patience, val_fraction=val_fraction, seed=seed, device=device, force=force, loss=loss,
                                     features=features, mlp=mlp, res=res,
                                     data_root=data_root, download=download, progress=not quiet))


@cli.command("reconstruct")
@click.option("--decoder", "decoder_dir", type=click.Path(), required=True)
@click.option("--fingerprints", "fingerprints_file", type=click.Path(), required=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--classifier", "classifier_dir", type=click.Path(), default=None,
              help="Independently trained classifier for class recovery [default: none, no class recovery].")
@click.option("--figure-class", type=click.IntRange(min=0), default=None,
              help="Class shown in the single-class figure [default: the first test image's class].")
@force_option
@data_options
@device_option
@quiet_option
def reconstruct_cmd(decoder_dir, fingerprints_file, out, classifier_dir, figure_class, force, data_root, download,
                    device, quiet):
    """Decode fingerprints; write reconstructions, metrics.json (beside baselines) and figures.

    Decoding is cheap and runs on the CPU: --device and --quiet are accepted like everywhere else
    and have no effect here.
    """
    from .jobs.decoder import reconstruct_job
    _print_summary(reconstruct_job(decoder_dir, fingerprints_file, out, classifier_dir=classifier_dir,
                                   figure_class=figure_class, force=force, data_root=data_root,
                                   download=download))


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got '{text}'") from None


def _precision_list(text: str) -> tuple[tuple, ...]:
    """'8:0.01,1:0.3,prior:2' -> ((8, 0.01), (1, 0.3), ("prior", 2))."""
    try:
        return tuple((D.PRIOR, int(r)) if g.strip() == D.PRIOR else (int(g), float(r))
                     for g, _, r in (item.partition(":") for item in text.split(",")))
    except ValueError:
        raise click.BadParameter(f"precisions are G:rtol pairs or prior:M, such as '8:0.01,1:0.3,prior:2', "
                                 f"got '{text}'") from None


def study_options(fn):
    """What every study command takes besides its grid: reusable checkpoints, seed, data, device, quiet,
    and the executor of its chunks and cells."""
    fn = executor_options(fn)
    for option in reversed((
            click.option("--model-from", type=click.Path(file_okay=False), default=None,
                         help="Reuse this target checkpoint instead of training one."),
            click.option("--evaluator-from", type=click.Path(file_okay=False), default=None,
                         help="Reuse this evaluator checkpoint instead of training one."),
            click.option("--seed", type=int, default=0, show_default=True),
            data_options, device_option, quiet_option)):
        fn = option(fn)
    return fn


@cli.command("study-directions")
@click.option("--dataset", type=click.Choice(D.DATASETS), default="mnist", show_default=True)
@click.option("--arch", type=click.Choice(D.ARCHITECTURES), default="lenet5", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Study folder (resumable).")
@click.option("--families", default=",".join(D.STUDY_FAMILIES), show_default=True)
@click.option("--mix", default=D.STUDY_MIX, show_default=True, help="Components of the 'mix' family.")
@click.option("--counts", default=",".join(map(str, D.STUDY_COUNTS)), show_default=True,
              help="Direction counts (prefixes of one set of the largest count).")
@click.option("--precisions", default=",".join(f"{g}:{r:g}" for g, r in D.STUDY_PRECISIONS), show_default=True,
              help="Search precisions as coarse_points:rtol pairs, or prior:M (M queries per pair at the quantiles "
                   "of the owner's training fingerprints); several give the budget curve.")
@click.option("--n-train", type=click.IntRange(min=20), default=D.STUDY_SCALE["n_train"], show_default=True,
              help="Training images fingerprinted for the decoder.")
@click.option("--n-test", type=click.IntRange(min=1), default=D.STUDY_SCALE["n_test"], show_default=True, help="Victims scored.")
@click.option("--decoder-ngf", type=click.IntRange(min=1), default=D.STUDY_SCALE["decoder_ngf"], show_default=True)
@click.option("--decoder-epochs", type=click.IntRange(min=1), default=D.STUDY_SCALE["decoder_epochs"], show_default=True)
@click.option("--decoder-loss", type=click.Choice(D.DECODER_LOSSES), default=D.DECODER_LOSSES[0], show_default=True,
              help="The decoders' loss (see hesig train-decoder --loss).")
@click.option("--decoder-features", type=click.Choice(D.DECODER_FEATURES), default=D.DECODER_FEATURES[0],
              show_default=True, help="The decoders' encoding of ε (see hesig train-decoder --features).")
@click.option("--decoder-mlp", type=click.IntRange(0, D.MAX_DECODER_MLP), default=0, show_default=True,
              help="The decoders' fully connected hidden layers (see hesig train-decoder --mlp).")
@click.option("--decoder-res", type=click.IntRange(0, D.MAX_DECODER_RES), default=0, show_default=True,
              help="The decoders' residual blocks at full resolution (see hesig train-decoder --res).")
@learn_options(True)
@study_options
def study_directions_cmd(dataset, arch, out, families, mix, counts, precisions, n_train, n_test, decoder_ngf,
                         decoder_epochs, decoder_loss, decoder_features, decoder_mlp, decoder_res, learn_epochs, learn_balance,
                         learn_images, model_from, evaluator_from, seed, data_root, download, device, quiet, executor):
    """Leakage study: decoder quality against direction family, count and search precision.

    The 'learned' family builds one set per count, searched at its own points (one query each)."""
    from .jobs.study import StudySettings, run_study
    settings = StudySettings(n_train=n_train, n_test=n_test, counts=_int_list(counts, "--counts"), seed=seed,
                             decoder_ngf=decoder_ngf, decoder_epochs=decoder_epochs, mix=mix, decoder_loss=decoder_loss,
                             decoder_features=decoder_features, decoder_mlp=decoder_mlp, decoder_res=decoder_res,
                             learn_epochs=learn_epochs,
                             learn_balance=learn_balance, learn_images=learn_images)
    cells = run_study(out, dataset, arch, settings, families=tuple(f.strip() for f in families.split(",")),
                      precisions=_precision_list(precisions), model_from=model_from, evaluator_from=evaluator_from,
                      device=device, data_root=data_root, download=download, progress=not quiet,
                      executor=executor, log=lambda m: click.echo(m, err=True))
    click.echo(f"{len(cells)} cells in {out}/cells")


def _grid(text: str) -> tuple:
    """'DEFENSE=ATTACKER,ATTACKER;DEFENSE=...' -> ((defense, (attacker, ...)), ...)."""
    rows = []
    for item in (part.strip() for part in text.split(";")):
        defense, eq, attackers = item.partition("=")
        if not eq or not defense.strip() or not attackers.strip():
            raise click.BadParameter(f"each grid entry is DEFENSE=ATTACKER[,ATTACKER...], got '{item}'")
        rows.append((defense.strip(), tuple(a.strip() for a in attackers.split(","))))
    return tuple(rows)


DEFAULT_GRID = ";".join(f"{d}={','.join(a)}" for d, a in D.DEFENSE_GRID)


@cli.command("study-defenses")
@click.option("--dataset", type=click.Choice(D.DATASETS), default="mnist", show_default=True)
@click.option("--arch", type=click.Choice(D.ARCHITECTURES), default="hecnn", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Study folder (resumable).")
@click.option("--grid", default=DEFAULT_GRID, show_default=True,
              help="DEFENSE=ATTACKER,...;... A defense is a client policy added to 'strict' ('none': strict alone): "
                   "rr:P, bdpl:P@MARGIN, flooding:SIGMA, rounding:DIGITS, input-noise:SIGMA, evaluations:N, ... "
                   "Attackers: standard, vote:R, bayes:Q[@T], low-flip:F, budgeted:N.")
@click.option("--defenses", default=None,
              help="Keep only these defenses of the grid (comma-separated, as the grid spells them).")
@click.option("--n-train", type=click.IntRange(min=20), default=D.DEFENSE_SCALE["n_train"], show_default=True,
              help="The attacker's own training images, fingerprinted through each defense for its decoder.")
@click.option("--n-test", type=click.IntRange(min=1), default=D.DEFENSE_SCALE["n_test"], show_default=True,
              help="Victims (test images) scored.")
@click.option("--n-honest", type=click.IntRange(min=10), default=D.DEFENSE_SCALE["n_honest"], show_default=True,
              help="Honest sessions per traffic kind in each of the detector's three sets.")
@click.option("--family", type=click.Choice(D.FAMILIES), default=D.DEFENSE_SCALE["family"], show_default=True)
@click.option("--count", type=click.IntRange(min=1), default=D.DEFENSE_SCALE["count"], show_default=True,
              help="Directions.")
@click.option("--decoder-epochs", type=click.IntRange(min=1), default=D.DEFENSE_SCALE["decoder_epochs"], show_default=True)
@study_options
def study_defenses_cmd(dataset, arch, out, grid, defenses, n_train, n_test, n_honest, family, count, decoder_epochs,
                       model_from, evaluator_from, seed, data_root, download, device, quiet, executor):
    """Defenses against the signature attack: honest cost, leakage to adaptive attackers, detection."""
    from .jobs.defense_study import DefenseStudySettings, run_defense_study
    rows = _grid(grid)
    if defenses is not None:
        keep = [d.strip() for d in defenses.split(",")]
        unknown = [d for d in keep if d not in {row[0] for row in rows}]
        if unknown:
            raise click.BadParameter(f"defense '{unknown[0]}' is not in the grid (choose from "
                                     f"{', '.join(r[0] for r in rows)})", param_hint="'--defenses'")
        rows = tuple(r for r in rows if r[0] in keep)
    settings = DefenseStudySettings(n_train=n_train, n_test=n_test, n_honest=n_honest, family=family, count=count,
                                    decoder_epochs=decoder_epochs, seed=seed, grid=rows)
    cells = run_defense_study(out, dataset, arch, settings, model_from=model_from, evaluator_from=evaluator_from,
                              device=device, data_root=data_root, download=download, progress=not quiet,
                              executor=executor, log=lambda m: click.echo(m, err=True))
    click.echo(f"{len(cells)} cells in {out}/steps")


@cli.command("demo")
@click.option("--dataset", type=click.Choice(["digits", "mnist", "fashion-mnist"]), default="digits", show_default=True)
@click.option("--arch", type=click.Choice(D.ARCHITECTURES), default=None, help="[default: mlp for digits, lenet5 otherwise]")
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--count", type=click.IntRange(min=1), default=D.DIRECTION_COUNT, show_default=True, help="Number of directions.")
@click.option("--train-limit", default=None,
              help="Fingerprint only this part of the train split (A:B) [default: all of it].")
@click.option("--decoder-epochs", type=click.IntRange(min=1), default=None,
              help="Decoder training epochs (early stopping may end sooner) [default: digits 150, mnist and "
                   "fashion-mnist 20].")
@click.option("--seed", type=int, default=0, show_default=True)
@data_options
@device_option
@quiet_option
def demo_cmd(dataset, arch, out, count, train_limit, decoder_epochs, seed, data_root, download, device, quiet):
    """Run the whole attack end to end and write report.html (bundled digits by default: no download;
    its time on 2 CPU cores is in benchmarks/demo.json and the README)."""
    from .jobs.demo import demo_job
    summary = demo_job(out, dataset=dataset, arch=arch, count=count, seed=seed, train_limit=train_limit,
                       decoder_epochs=decoder_epochs, device=device, data_root=data_root, download=download,
                       progress=not quiet, log=lambda m: click.echo(m, err=True))
    from .jobs.report import CLASS_RECOVERY_NOTE, ROW_NAMES, ROW_NOTES, SSIM_NOTE
    m = summary["metrics"]["metrics"]
    fp = summary["metrics"]["fingerprints"]
    click.echo(f"\nreconstructions of {m['attack']['n']} held-out {dataset} test images "
               f"({fp['queries_per_fingerprint_mean']:.0f} oracle queries per image):")
    click.echo(f"  {'':20s} {'PSNR dB':>8s} {'SSIM':>6s} {'full map':>8s} {'class recovery':>15s}   what the row is")
    for key in ("attack", "baseline_class_mean", "baseline_mean_image"):
        row = m[key]
        recovery = "—" if row["class_recovery"] is None else f"{100 * row['class_recovery']:.1f} %"
        click.echo(f"  {ROW_NAMES[key]:20s} {row['psnr_mean']:8.2f} {row['ssim_mean']:6.3f} "
                   f"{row['ssim_full_map_mean']:8.3f} {recovery:>15s}   {ROW_NOTES[key]}")
    click.echo(f"  ({SSIM_NOTE}; {CLASS_RECOVERY_NOTE})")
    written = sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("*")
                     if p.is_file() and p.parent.name != "steps" and not p.name.startswith("."))
    click.echo(f"\nwritten in {out}: {', '.join(written)}, steps/ (one record per finished step)")
    click.echo(f"open {Path(out) / 'report.html'} in a browser for the whole run on one page")


@cli.command("report")
@click.argument("run_dir", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Report file [default: RUN_DIR/report.html; for a fingerprint file FILE.report.html]; never one "
                   "of the run's own files.")
def report_cmd(run_dir, out):
    """Write one self-contained report.html for a run folder (demo, reconstruct, an attack, a study,
    detect-vicious, output-defenses) or a fingerprint file: what was run, the threat model,
    the metrics beside the baselines, queries, and the figures, embedded. Opens offline in any browser."""
    from .jobs.report import report_job
    _print_summary(report_job(run_dir, out))


# -- attack (He et al.) -------------------------------------------------------------------------

@cli.group("attack")
def attack_group():
    """Attacks of the sibling papers: He et al.'s three on a split model, and vicious classifiers."""


def _attack_options(fn):
    options = [
        click.option("--model", "model_dir", type=click.Path(), required=True, help="Target model checkpoint directory."),
        click.option("--split", required=True, help="Layer the model is cut after (e.g. conv1, ReLU2); the adversary "
                                                    "sees this layer's output."),
        click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder (resumable)."),
        click.option("--indices", default=None, help="Test images attacked: A:B or i,j,k (default: all)."),
        click.option("--feature-noise", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Defense: Gaussian noise σ added on the trusted side to every intermediate output."),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return data_options(device_option(quiet_option(fn)))


def _rmle_options(fn):
    options = [
        click.option("--iterations", type=click.IntRange(min=1), default=D.RMLE["iterations"], show_default=True, help="Adam steps T."),
        click.option("--rmle-lr", type=click.FloatRange(min=0, min_open=True), default=D.RMLE["lr"], show_default=True,
                     help="Adam step size."),
        click.option("--tv-weight", type=click.FloatRange(min=0), default=D.RMLE["tv_weight"], show_default=True, help="λ of eq. 3c."),
        click.option("--tv-beta", type=click.FloatRange(min=0, min_open=True), default=D.RMLE["tv_beta"], show_default=True,
                     help="β of eq. 3b (paper text: 1; their code: 2)."),
        click.option("--init-noise", type=click.FloatRange(min=0), default=D.RMLE["init_noise"], show_default=True,
                     help="Jitter σ on the constant-gray start (0 = the paper's)."),
        click.option("--no-clip", is_flag=True, help="Do not project x into [0, 1] after each step."),
        click.option("--chunk-size", type=click.IntRange(min=1), default=D.RMLE_CHUNK_SIZE, show_default=True,
                     help="Images per resumable rMLE chunk."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return executor_options(fn)


def _rmle_settings(iterations, rmle_lr, tv_weight, tv_beta, init_noise, no_clip) -> dict:
    return {"iterations": iterations, "lr": rmle_lr, "tv_weight": tv_weight, "tv_beta": tv_beta,
            "init_noise": init_noise, "clip": not no_clip}


def _run_attack(attack, quiet, **kwargs):
    from .jobs.split_inference import attack_job
    _print_summary(attack_job(attack, progress=not quiet, log=lambda m: None if quiet else click.echo(m, err=True),
                              **kwargs))


@attack_group.command("rmle")
@_attack_options
@_rmle_options
def attack_rmle_cmd(model_dir, split, out, indices, feature_noise, seed, iterations, rmle_lr, tv_weight, tv_beta,
                    init_noise, no_clip, chunk_size, data_root, download, device, quiet, executor):
    """White-box rMLE (Algorithm 1): the adversary holds the edge's weights; 0 queries."""
    _run_attack("rmle", quiet, model_dir=model_dir, split=split, out=out, indices=indices, feature_noise=feature_noise,
                seed=seed, rmle=_rmle_settings(iterations, rmle_lr, tv_weight, tv_beta, init_noise, no_clip),
                chunk_size=chunk_size, data_root=data_root, download=download, device=device, executor=executor)


@attack_group.command("inverse-network")
@_attack_options
@click.option("--query-set", type=click.Choice(D.QUERY_SETS), default="train", show_default=True,
              help="train: the target's training set; disjoint: the other half of the training split (target "
                   "trained with --train-half); gaussian: standard Gaussian noise.")
@click.option("--queries", type=click.IntRange(min=1), default=None, help="Queries to the edge (default: the whole set).")
@click.option("--design", type=click.Choice(D.INVERSE_DESIGNS), default="auto", show_default=True,
              help="Inverse architecture: 'paper' (LeNet-5 conv1/ReLU2 only) or 'auto' (any split).")
@click.option("--epochs", type=click.IntRange(min=1), default=D.INVERSE_TRAINING["epochs"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=D.INVERSE_TRAINING["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D.INVERSE_TRAINING["lr"], show_default=True)
def attack_inverse_cmd(model_dir, split, out, indices, feature_noise, seed, query_set, queries, design, epochs,
                       batch_size, lr, data_root, download, device, quiet):
    """Black-box Inverse-Network (Algorithm 2): query the edge, learn its inverse."""
    _run_attack("inverse-network", quiet, model_dir=model_dir, split=split, out=out, indices=indices,
                feature_noise=feature_noise, seed=seed, query_set=query_set, queries=queries, design=design,
                epochs=epochs, batch_size=batch_size, lr=lr, data_root=data_root, download=download, device=device)


@attack_group.command("shadow")
@_attack_options
@click.option("--shadow-data", type=click.Choice(D.SHADOW_DATA), default="same", show_default=True,
              help="same: the target's training set; disjoint: the other half of the training split.")
@click.option("--structure", type=click.Choice(D.SHADOW_STRUCTURES), default="same", show_default=True,
              help="same: the edge's architecture; different: He et al.'s Table 5 (k5 conv -> two k3 convs).")
@click.option("--epochs", type=click.IntRange(min=1), default=D.SHADOW_TRAINING["epochs"], show_default=True, help="Shadow training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=D.SHADOW_TRAINING["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D.SHADOW_TRAINING["lr"], show_default=True)
@_rmle_options
def attack_shadow_cmd(model_dir, split, out, indices, feature_noise, seed, shadow_data, structure, epochs, batch_size,
                      lr, iterations, rmle_lr, tv_weight, tv_beta, init_noise, no_clip, chunk_size, data_root,
                      download, device, quiet, executor):
    """Query-free (Algorithm 3): train a shadow edge through the cloud part, then rMLE on it."""
    _run_attack("shadow", quiet, model_dir=model_dir, split=split, out=out, indices=indices,
                feature_noise=feature_noise, seed=seed, shadow_data=shadow_data, structure=structure, epochs=epochs,
                batch_size=batch_size, lr=lr, rmle=_rmle_settings(iterations, rmle_lr, tv_weight, tv_beta, init_noise,
                                                                   no_clip),
                chunk_size=chunk_size, data_root=data_root, download=download, device=device, executor=executor)


@attack_group.command("vicious")
@click.option("--dataset", type=click.Choice(D.DATASETS), default="mnist", show_default=True)
@click.option("--beta", default="3/1", show_default=True,
              help="β^R/β^C of eq. 4: 0/1 honest classifier, 1/0 reconstruction only, e.g. 1/1, 3/1, 5/1.")
@click.option("--release", type=click.Choice(D.VICIOUS_RELEASES), default="logits", show_default=True,
              help="What the user sends back and G reads: raw logits or softmax probabilities.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory (F, G, metrics).")
@click.option("--train-limit", type=click.IntRange(min=10), default=None,
              help="Train on the first N images only [default: the whole training split].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=D.VICIOUS_TRAINING["epochs"], show_default=True, help="Paper: 50.")
@click.option("--batch-size", type=click.IntRange(min=1), default=D.VICIOUS_TRAINING["batch_size"], show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=D.VICIOUS_TRAINING["lr"], show_default=True)
@click.option("--ngf", type=click.IntRange(min=1), default=D.VICIOUS_NGF, show_default=True, help="Decoder G width.")
@click.option("--image-size", type=click.IntRange(min=8), default=D.VICIOUS_IMAGE_SIZE, show_default=True,
              help="Images are resized to this square size (paper: 32).")
@click.option("--ssim-weight", type=click.FloatRange(min=0), default=D.VICIOUS_LOSS["ssim_weight"], show_default=True, help="α of eq. 3.")
@click.option("--huber-weight", type=click.FloatRange(min=0), default=D.VICIOUS_LOSS["huber_weight"], show_default=True, help="γ of eq. 3.")
@click.option("--huber-delta", type=click.FloatRange(min=0, min_open=True), default=D.VICIOUS_LOSS["huber_delta"], show_default=True)
@click.option("--valid-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=D.VICIOUS_TRAINING["valid_fraction"],
              show_default=True, help="Share of the training split held out for model selection.")
@click.option("--risk-regularisation", type=click.Choice(D.RISK_REGULARISATIONS), default="pinv", show_default=True,
              help="How Σ is inverted for R (eq. 6).")
@data_options
@device_option
@quiet_option
def attack_vicious_cmd(dataset, beta, release, out, epochs, batch_size, lr, ngf, image_size, ssim_weight, huber_weight,
                       huber_delta, valid_fraction, train_limit, risk_regularisation, seed, data_root, download, device,
                       quiet):
    """Vicious classifier (Malekzadeh & Gündüz, Algorithm 1): train F and its decoder G jointly, score on the test split."""
    from .jobs.vicious import train_vicious_job
    result = train_vicious_job(dataset, beta, release, out, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                               ngf=ngf, image_size=image_size, ssim_weight=ssim_weight, huber_weight=huber_weight,
                               huber_delta=huber_delta, valid_fraction=valid_fraction, train_limit=train_limit,
                               risk_regularisation=risk_regularisation, data_root=data_root, download=download,
                               device=device, progress=not quiet)
    _print_summary({"out": out, "resumed": result.get("resumed", False), "best_epoch": result["best_epoch"],
                    "train_seconds": round(result["train_seconds"], 1), **result["test"]})


@cli.command("detect-vicious")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for detection.json and detection.png.")
@click.option("--finetune-size", type=click.IntRange(min=1), default=250, show_default=True,
              help="K labelled samples of D^test+ the auditor fine-tunes on.")
@click.option("--probe-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="M test images the outputs are compared on (eq. 19).")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True, help="Full-batch Adam steps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--draws", type=click.IntRange(min=1), default=3, show_default=True,
              help="Independent D^test+ draws per model.")
@click.option("--seed", type=int, default=0, show_default=True)
@data_options
@device_option
@quiet_option
def detect_vicious_cmd(run_dirs, out, finetune_size, probe_size, rounds, lr, draws, seed, data_root, download, device,
                       quiet):
    """Vicious-likelihood v (Appendix I.2, eq. 19-20) of each run; ROC/AUC when honest and vicious runs are mixed."""
    from .jobs.vicious import detect_vicious_job
    _print_summary(detect_vicious_job(run_dirs, out, finetune_size=finetune_size, probe_size=probe_size, rounds=rounds,
                                      lr=lr, draws=draws, seed=seed, data_root=data_root, download=download,
                                      device=device, progress=not quiet))


@cli.command("output-defenses")
@click.option("--run", "run_dir", type=click.Path(), required=True, help="A vicious run directory (β^R > 0).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for defenses.json and defenses.png.")
@click.option("--defense", "defenses", multiple=True, required=True,
              help="none, round:q, noise:sigma, topk:k or argmax; repeat the option for a curve.")
@click.option("--adapt-epochs", type=click.IntRange(min=0), default=2, show_default=True,
              help="Epochs the adaptive server fine-tunes G on defended outputs (0: fixed G only).")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Score on the first N test images.")
@click.option("--seed", type=int, default=0, show_default=True)
@data_options
@device_option
@quiet_option
def output_defenses_cmd(run_dir, out, defenses, adapt_epochs, test_limit, seed, data_root, download, device, quiet):
    """Output defenses (Appendix I): rounding, Gaussian noise, top-k, argmax -- accuracy vs reconstruction."""
    from .jobs.vicious import output_defenses_job
    _print_summary(output_defenses_job(run_dir, out, defenses, adapt_epochs=adapt_epochs, test_limit=test_limit, seed=seed,
                                       data_root=data_root, download=download, device=device, progress=not quiet))


def _int_option(value: str, name: str) -> int:
    try:
        parsed = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an integer or 'auto'", param_hint=name) from None
    if parsed < 1:
        raise click.BadParameter(f"{parsed} is not >= 1", param_hint=name)
    return parsed


#: Commands that keep their finished work in a run store (and so resume when rerun).
RESUMABLE = {"fingerprint": "finished chunks are kept", "demo": "finished steps are kept",
             "study-directions": "finished steps and cells are kept",
             "study-defenses": "finished steps and cells are kept",
             "attack": "finished chunks and steps are kept"}


def _interrupted(argv: list[str]) -> str:
    """What an interrupt leaves behind, said truthfully for the command that ran."""
    command = next((a for a in argv if not a.startswith("-")), "")
    if command in RESUMABLE:
        return f"interrupted; {RESUMABLE[command]}: rerun the same command to resume"
    return "interrupted; this command keeps nothing partial (its outputs are written only when it finishes)"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every user error -> one ``error:`` line on stderr and a non-zero exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args=argv, prog_name="hesig", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(f"error: {_interrupted(argv)}", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # click's usage errors print "Usage: ... Try ... Error: ..."; one line is enough.
        hint = f" (see 'hesig {exc.ctx.command_path.partition(' ')[2]} --help')" \
            if isinstance(exc, click.UsageError) and exc.ctx is not None and " " in exc.ctx.command_path else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except HesigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)


@attack_group.command("key-recovery")
@click.option("--client-policy", default="undefended", show_default=True,
              help="The victim client's policy: undefended, strict, flooding:SIGMA|auto, rounding:DIGITS, budget:N, "
                   "fresh-keys, joined with '+' (e.g. strict+budget:8+fresh-keys).")
@click.option("--model", "model_dir", type=click.Path(), default=None,
              help="Polynomial (hecnn) checkpoint; default: an untrained hecnn (the attack only needs the result format).")
@click.option("--dataset", default=None, help="Take the victim's secret image from this test split (default: random).")
@click.option("--index", type=click.IntRange(min=0), default=0, show_default=True, help="Test image index.")
@click.option("--steps", type=click.IntRange(1, 60), default=12, show_default=True,
              help="Bisection steps per key component (replies = 1 + 2 x steps).")
@click.option("--layout", type=click.Choice(D.CKKS_LAYOUTS), default="batched", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@data_options
@quiet_option
def attack_key_recovery_cmd(client_policy, model_dir, dataset, index, steps, layout, seed, data_root, download, quiet):
    """A malicious server recovers the victim's CKKS secret key from its one-bit replies (Li-Micciancio
    setting), then decrypts the victim's input. Talks to the client through wire messages only."""
    from .jobs.key_recovery import key_recovery_job
    _print_summary(key_recovery_job(client_policy=client_policy, model_dir=model_dir, dataset=dataset, index=index,
                                    steps=steps, layout=layout, seed=seed, data_root=data_root, download=download,
                                    log=lambda m: None if quiet else click.echo(m, err=True)))
