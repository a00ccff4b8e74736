"""Job ``hesig demo``: the whole perturbation-signature attack end to end.

Target model, independent evaluator, directions, fingerprints of the train and test split,
decoder, reconstructions, metrics and figures. The demo folder is a run store: ``run.json``
pins the configuration (a rerun with another one is refused) and every finished step is
recorded, so an interrupted demo resumes at the step it was in (and that step resumes its own
chunks).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..core.defaults import COARSE_POINTS, DIRECTION_COUNT, EPS_MAX, RTOL
from ..core.errors import InvalidValueError
from ..core.io import atomic_write_json
from ..signature.fingerprints import Fingerprints
from .decoder import reconstruct_job, train_decoder_job
from .fingerprint import fingerprint_job
from .models import directions_job, train_model_job
from .runstore import RunStore

#: Per-dataset demo settings: target arch, evaluator arch, decoder epochs / patience.
DEMO_SETTINGS = {
    "digits": {"arch": "mlp", "evaluator": "mlp", "decoder_epochs": 150, "patience": 15},
    "mnist": {"arch": "lenet5", "evaluator": "lenet5", "decoder_epochs": 20, "patience": 4},
    "fashion-mnist": {"arch": "lenet5", "evaluator": "lenet5", "decoder_epochs": 20, "patience": 4},
}


def demo_job(out: str | Path, *, dataset: str = "digits", arch: str | None = None, count: int = DIRECTION_COUNT,
             seed: int = 0, eps_max: float = EPS_MAX, rtol: float = RTOL, coarse_points: int = COARSE_POINTS,
             decoder_epochs: int | None = None, train_limit: str | None = None, device: str | None = None,
             data_root=None, download: bool = False, progress: bool = True,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the demo in ``out``; returns the summary also written to ``out/summary.json``
    (plus the path of ``out/report.html``, written last)."""
    if dataset not in DEMO_SETTINGS:
        raise InvalidValueError(f"demo supports {', '.join(DEMO_SETTINGS)}, not '{dataset}'")
    settings = DEMO_SETTINGS[dataset]
    arch = arch or settings["arch"]
    config = {"dataset": dataset, "arch": arch, "count": count, "seed": seed, "eps_max": eps_max, "rtol": rtol,
              "coarse_points": coarse_points, "train_limit": train_limit}
    store = RunStore(out, "demo", config)
    out = store.root
    common = {"data_root": data_root, "download": download}
    steps: dict[str, Any] = {}

    def step(name: str, fn: Callable[..., dict[str, Any]], **kwargs: Any) -> None:
        def run() -> dict[str, Any]:
            log(f"[{name}] ...")
            t0 = time.perf_counter()
            record = fn(**kwargs)
            record["step_seconds"] = round(time.perf_counter() - t0, 1)
            log(f"[{name}] done in {record['step_seconds']} s")
            return record
        record, reused = store.step(name, run)
        if reused:
            log(f"[{name}] reusing {kwargs.get('out', '')}")
        steps[name] = {**record, "reused": reused}

    step("train-model", train_model_job, dataset=dataset, arch=arch, out=out / "model", seed=seed, device=device,
         progress=progress, **common)
    step("train-evaluator", train_model_job, dataset=dataset, arch=settings["evaluator"], out=out / "evaluator",
         seed=seed + 1000, device=device, progress=progress, **common)
    step("directions", directions_job, family="random", count=count, out=out / "directions.safetensors",
         dataset=dataset, seed=seed, **common)
    for split, limit in (("train", train_limit), ("test", None)):
        step(f"fingerprint-{split}", fingerprint_job, model_dir=out / "model",
             directions_file=out / "directions.safetensors", dataset=dataset, split=split,
             out=out / f"fingerprints_{split}.safetensors", indices=limit, eps_max=eps_max, rtol=rtol,
             coarse_points=coarse_points, device=device, progress=progress, **common)
    step("train-decoder", train_decoder_job, fingerprints_file=out / "fingerprints_train.safetensors",
         out=out / "decoder", epochs=decoder_epochs or settings["decoder_epochs"], patience=settings["patience"],
         seed=seed, device=device, progress=progress, **common)
    # Scoring is cheap and has no state worth keeping: it runs every time.
    steps["reconstruct"] = reconstruct_job(decoder_dir=out / "decoder",
                                           fingerprints_file=out / "fingerprints_test.safetensors",
                                           out=out / "reconstruct", classifier_dir=out / "evaluator", **common)
    # Costs come from the artifacts themselves, so a resumed demo reports the same numbers.
    fingerprints = {split: Fingerprints.load(out / f"fingerprints_{split}.safetensors").summary()
                    for split in ("train", "test")}
    summary = {"config": {**config, "hesig_version": __version__}, "steps": steps, "fingerprints": fingerprints,
               "metrics": json_load(out / "reconstruct" / "metrics.json"),
               "target_model": json_load(out / "model" / "model.json"),
               "evaluator_model": json_load(out / "evaluator" / "model.json")}
    atomic_write_json(out / "summary.json", summary)
    from .report import report_job  # the whole run on one page, figures embedded
    summary["report"] = report_job(out)["report"]
    return summary


def json_load(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
