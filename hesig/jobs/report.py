"""Job ``hesig report``: one self-contained ``report.html`` for a run folder.

The report says what was run (kind, command where it can be rebuilt, pinned configuration,
versions, hashes), the threat model in two sentences, the metrics beside their baselines with
one line per row saying what the row is, the oracle queries, every number of the run's metrics
file, and the run's figures embedded as base64 PNGs. It needs no network: inline CSS, no
scripts, no external links. Every text that comes from the run's files is HTML-escaped.

Folders it understands: ``hesig demo``, ``hesig reconstruct``, ``hesig attack
rmle|inverse-network|shadow|vicious``, ``hesig study-directions``, ``hesig detect-vicious``,
``hesig output-defenses``, and a fingerprint file (report: ``<file>.report.html`` beside it). Anything else, or a
run file that is not valid JSON, is one :class:`~hesig.core.errors.HesigError` line. The report is
written atomically and never over one of the files it reads, nor over a file it did not write.
"""

from __future__ import annotations

import base64
import html
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.errors import CheckpointError, HesigError, OutputError

REPORT_FILE = "report.html"
#: Marks a file this job wrote: only such a file is ever replaced.
GENERATOR = "hesig report"

#: One line per row of a reconstruction-metrics table (the demo printout uses the same text).
ROW_NOTES = {
    "attack": "the attack: the decoder's reconstruction of each secret test image",
    "baseline_class_mean": "knows only the true class: draws the mean training image of that class "
                           "(its class recovery is ~100% by construction)",
    "baseline_mean_image": "knows nothing: draws the mean training image (class recovery ~ chance)",
}
ROW_NAMES = {"attack": "attack", "baseline_class_mean": "class-mean baseline",
             "baseline_mean_image": "mean-image baseline"}
SSIM_NOTE = ("SSIM: the papers' convention, the mean over the SSIM map's interior (scikit-image / piq; "
             "Gaussian window 11, σ 1.5, smaller under 11 pixels a side; data_range 1.0); "
             "'full map' averages the whole reflect-padded map")
CLASS_RECOVERY_NOTE = ("class recovery: the share of rows an independently trained evaluator classifier "
                       "labels with the secret image's true class")

_SIGNATURE = ("The model owner is the adversary: the victim's input X reaches it only encrypted (CKKS) or, in the "
              "plaintext testbed, hidden inside an oracle, and per query it learns one bit, whether adding its "
              "perturbation N changed the top-1 label. From the smallest flipping step along each of k fixed "
              "directions (X's fingerprint) a decoder trained on the owner's own data redraws X.")
THREAT_MODELS = {
    "demo": _SIGNATURE,
    "reconstruction": _SIGNATURE,
    "fingerprint": _SIGNATURE + " This folder holds the fingerprints only; decoding them is `hesig reconstruct`.",
    "study": _SIGNATURE + " The study compares direction families, counts and search precisions at their query cost.",
    "split": "The victim runs the first layers of a split model (the edge) and sends the intermediate output to the "
             "server, which is the adversary. It redraws the input from that output: white-box rMLE (it knows the "
             "edge's weights), a black-box inverse network (learned from queries to the edge) or query-free (a "
             "shadow edge trained through its own part of the model).",
    "vicious": "The server ships the classifier F that users run on their own data and sees only F's released "
               "output vector (logits or softmax). A vicious F is trained jointly with a decoder G so that the "
               "released vector carries the input, which G redraws.",
    "detection": "An auditor holding a few labelled images fine-tunes a copy of each shipped classifier F and "
                 "measures how far its outputs move (eq. 19-20); a vicious F moves more than an honest one.",
    "defenses": "The user defends against a vicious F by releasing less (rounded, noisy, top-k or argmax outputs); "
                "the server's decoder G is scored as trained and after adapting to the defended outputs.",
}

#: What each known figure shows (the file name is shown as well).
FIGURE_CAPTIONS = {
    "fig2_reconstructions.png": "Secret test inputs (top), the attack's reconstructions (middle) and the class-mean "
                                "image of each input's true class (bottom: what knowing only the label gives).",
    "fig3_single_class.png": "Many inputs of one class: if the reconstructions differ from each other like the "
                             "originals do, the fingerprint carries style beyond the class label (the class mean, "
                             "bottom, is one image for all).",
    "signatures.png": "ε signatures: the label-change distance along each direction for a few test inputs of "
                      "different classes, against the median over all test inputs.",
    "protocol.png": "He et al.'s protocol images (first test image of each class) and their reconstructions.",
    "reconstructions.png": "Test inputs and the decoder's reconstructions from the released outputs.",
    "detection.png": "Detection score of each model (and ROC where honest and vicious runs are mixed).",
    "defenses.png": "Accuracy against reconstruction quality under each output defense.",
}
MAX_FIGURES = 24


@dataclass
class Run:
    """Everything a report shows, gathered from a run folder."""

    kind: str
    title: str
    threat: str
    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    metric_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    queries: list[tuple[str, Any]] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    inputs: list[Path] = field(default_factory=list)
    #: A single-file run (a fingerprint file): the report goes beside it and shows no folder figures.
    file: Path | None = None


def read_json(path: Path, inputs: list[Path]) -> dict[str, Any]:
    """A JSON object from ``path`` (recorded as an input), or one CheckpointError line."""
    try:
        obj = json.loads(path.read_text())
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); it was not written by hesig or is damaged") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; it was not written by hesig")
    inputs.append(path)
    return obj


def _collect_hashes(obj: Any, prefix: str = "", found: dict[str, str] | None = None) -> dict[str, str]:
    found = {} if found is None else found
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, (dict, list)):
                _collect_hashes(value, f"{name}.", found)
            elif isinstance(key, str) and (key.endswith("_hash") or key == "fingerprints") and isinstance(value, str):
                found.setdefault(name, value)
    elif isinstance(obj, list) and len(obj) <= 50:
        for i, value in enumerate(obj):
            _collect_hashes(value, f"{prefix}{i}.", found)
    return found


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON -> {dotted key: scalar}; long lists are summarised by their length."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(obj, list) and len(obj) > 12:
        out[prefix[:-1]] = f"[{len(obj)} values]"
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = obj
    return out


def _reconstruction_rows(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rows = {key: metrics[key] for key in ROW_NOTES if isinstance(metrics.get(key), dict)}
    if "attack" not in rows:
        raise CheckpointError("the metrics file has no 'attack' row: not a hesig reconstruction report")
    return rows


def _demo_command(config: dict[str, Any], root: Path) -> str:
    parts = ["hesig", "demo", "--dataset", str(config.get("dataset")), "--arch", str(config.get("arch")),
             "--count", str(config.get("count")), "--seed", str(config.get("seed"))]
    if config.get("train_limit"):
        parts += ["--train-limit", str(config["train_limit"])]
    return " ".join(parts + ["--out", str(root)])


def _gather_demo(run: Run, manifest: dict[str, Any]) -> None:
    root = run.root
    run.title = f"hesig demo on {run.config.get('dataset')} ({run.config.get('arch')})"
    run.command = _demo_command(run.config, root) + "   (rebuilt from run.json)"
    metrics = read_json(_required(root / "reconstruct" / "metrics.json", "the demo has not finished"), run.inputs)
    _gather_reconstruction(run, metrics)
    summary_path = root / "summary.json"
    if summary_path.exists():
        summary = read_json(summary_path, run.inputs)
        for role in ("target_model", "evaluator_model"):
            model = summary.get(role) or {}
            if isinstance(model, dict):
                run.versions[f"{role.replace('_', ' ')}"] = (f"{model.get('arch')} on {model.get('dataset')}, "
                                                            f"test accuracy {_pct(model.get('test_accuracy'))}")
                for key, value in _collect_hashes(model).items():
                    run.hashes.setdefault(f"{role}.{key}", value)
        steps = summary.get("steps") or {}
        if isinstance(steps, dict):
            rows = [[name, rec.get("step_seconds", "—") if isinstance(rec, dict) else "—",
                     "yes" if isinstance(rec, dict) and rec.get("reused") else "no"]
                    for name, rec in steps.items() if name != "reconstruct"]
            run.extra_tables.append(("Steps (seconds on this machine; 'reused' steps were finished by an earlier run)",
                                     ["step", "seconds", "reused"], rows))


def _gather_reconstruction(run: Run, metrics: dict[str, Any]) -> None:
    report = metrics.get("metrics")
    if not isinstance(report, dict):
        raise CheckpointError("the metrics file has no 'metrics' object: not a hesig reconstruction report")
    run.metric_rows = _reconstruction_rows(report)
    run.numbers.update(flatten(metrics))
    run.hashes.update(_collect_hashes({k: v for k, v in metrics.items() if k != "job"}))
    run.versions.setdefault("hesig (run)", metrics.get("hesig_version"))
    ident = metrics.get("identity") or {}
    if isinstance(ident, dict):
        search = ident.get("search") or {}
        run.config.setdefault("oracle", ident.get("oracle"))
        run.config.setdefault("directions", f"{ident.get('directions_count')} {ident.get('directions_family')}")
        if isinstance(search, dict):
            run.config.setdefault("search", ", ".join(f"{k} {v}" for k, v in search.items()))
    fp = metrics.get("fingerprints") or {}
    if isinstance(fp, dict):
        _fingerprint_queries(run, fp)


def _fingerprint_queries(run: Run, fp: dict[str, Any]) -> None:
    labels = (("queries_per_fingerprint_mean", "oracle queries per image (fingerprint), mean"),
              ("queries_per_pair_mean", "queries per (image, direction) pair, mean"),
              ("queries_total", "queries in total"), ("n", "images fingerprinted"),
              ("directions", "directions per fingerprint"),
              ("censored_fraction", "pairs censored (no flip up to ε_max)"),
              ("compute_seconds", "fingerprinting seconds"))
    for key, label in labels:
        if key in fp:
            value = fp[key]
            run.queries.append((label, _pct(value) if key == "censored_fraction" else value))
    costs = fp.get("oracle_costs")
    if isinstance(costs, dict):
        for key, value in costs.items():
            run.queries.append((f"oracle cost: {key}", value))


def _gather_attack(run: Run, manifest: dict[str, Any]) -> None:
    metrics = read_json(_required(run.root / "metrics.json", "the attack has not finished"), run.inputs)
    run.title = (f"hesig attack {metrics.get('attack')} at {metrics.get('split')} "
                 f"({metrics.get('arch')} on {metrics.get('dataset')})")
    report = metrics.get("metrics")
    if not isinstance(report, dict):
        raise CheckpointError(f"{run.root / 'metrics.json'} has no 'metrics' object")
    run.metric_rows = _reconstruction_rows(report)
    run.numbers.update(flatten(metrics))
    run.hashes.update(_collect_hashes(metrics))
    run.versions["hesig (run)"] = metrics.get("hesig_version")
    run.queries += [("queries to the edge", metrics.get("queries")),
                    ("attack seconds", _round(metrics.get("attack_seconds"))),
                    ("target test accuracy", _pct(metrics.get("target_test_accuracy"))),
                    ("accuracy under --feature-noise " + str(metrics.get("feature_noise")),
                     _pct(metrics.get("defended_accuracy")))]
    protocol = metrics.get("protocol")
    if isinstance(protocol, dict):
        run.extra_tables.append(("He et al.'s ten-image protocol", ["PSNR dB", "SSIM", "SSIM (own range)"],
                                 [[_round(protocol.get("psnr_mean")), _round(protocol.get("ssim_mean"), 3),
                                   _round(protocol.get("ssim_own_range_mean"), 3)]]))


def _gather_vicious(run: Run, manifest: dict[str, Any]) -> None:
    metrics = read_json(_required(run.root / "metrics.json", "the vicious run has not finished"), run.inputs)
    settings = metrics.get("settings") or run.config
    run.title = (f"hesig attack vicious: β^R/β^C {settings.get('beta')}, {settings.get('release')} released, "
                 f"{settings.get('dataset')}")
    test = metrics.get("test")
    if not isinstance(test, dict):
        raise CheckpointError(f"{run.root / 'metrics.json'} has no 'test' object")
    run.numbers.update(flatten(metrics))
    run.hashes.update(_collect_hashes(metrics))
    run.versions["hesig (run)"] = metrics.get("hesig_version")
    rows = [[key, _round(value, 4)] for key, value in flatten(test).items()]
    run.extra_tables.append(("Test split (F's accuracy; G's reconstruction from the released vectors; risk R)",
                             ["metric", "value"], rows))
    run.queries += [("queries (released vectors)", metrics.get("queries")),
                    ("note", metrics.get("queries_note")), ("training seconds", _round(metrics.get("train_seconds")))]


def _gather_study(run: Run, manifest: dict[str, Any]) -> None:
    run.title = f"hesig study-directions: {run.config.get('arch')} on {run.config.get('dataset')}"
    cells = []
    for path in sorted((run.root / "steps").glob("cell-*.json")):
        cells.append(read_json(path, run.inputs))
    if not cells:
        raise CheckpointError(f"{run.root} holds a study with no finished cells yet")
    rows = []
    for c in cells:
        rows.append([c.get("family"), c.get("count"), f"{c.get('coarse_points')}:{c.get('rtol')}",
                     _round(c.get("queries_per_fingerprint"), 0), _round(c.get("psnr")), _round(c.get("ssim"), 3),
                     _pct(c.get("class_recovery"))])
        for key, value in flatten(c).items():
            run.numbers[f"{c.get('family')}.k{c.get('count')}.{c.get('coarse_points')}:{c.get('rtol')}.{key}"] = value
    base = (cells[0].get("baselines") or {}).get("baseline_class_mean") or {}
    if isinstance(base, dict) and base:
        rows.append(["class-mean baseline", "—", "—", 0, _round(base.get("psnr_mean")), _round(base.get("ssim_mean"), 3),
                     _pct(base.get("class_recovery"))])
    run.extra_tables.append(("Cells: decoder quality against family, count and precision (G:rtol)",
                             ["family", "directions", "precision", "queries / fingerprint", "PSNR dB", "SSIM",
                              "class recovery"], rows))


def _gather_fingerprint(run: Run, manifest: dict[str, Any]) -> None:
    from ..signature.fingerprints import Fingerprints
    final = run.file
    run.title = f"hesig fingerprint: {final.name}"
    if not final.exists():
        raise CheckpointError(f"{run.root} is an unfinished fingerprint run store: rerun the fingerprint command to "
                              f"finish it, then report {final}")
    fp = Fingerprints.load(final)
    run.inputs.append(final)
    summary = fp.summary()
    _fingerprint_queries(run, summary)
    run.numbers.update(flatten({"summary": summary, "meta": fp.meta}))
    run.hashes.update(_collect_hashes(fp.meta))
    run.versions["hesig (run)"] = fp.meta.get("hesig_version") or manifest.get("hesig_version")


def _gather_plain_reconstruction(run: Run, metrics: dict[str, Any]) -> None:
    ident = metrics.get("identity") or {}
    run.title = f"hesig reconstruct: {ident.get('dataset')} {ident.get('split')} ({ident.get('arch')})"
    _gather_reconstruction(run, metrics)


def _gather_flat(run: Run, data: dict[str, Any], title: str) -> None:
    run.title = title
    run.numbers.update(flatten(data))
    run.hashes.update(_collect_hashes(data))
    run.versions["hesig (run)"] = data.get("hesig_version")


def _required(path: Path, why: str) -> Path:
    if not path.exists():
        raise CheckpointError(f"{path} is missing: {why}")
    return path


GATHER = {"demo": ("demo", _gather_demo), "study": ("study", _gather_study),
          "vicious": ("vicious", _gather_vicious), "fingerprint": ("fingerprint", _gather_fingerprint),
          "rmle attack": ("split", _gather_attack), "inverse-network attack": ("split", _gather_attack),
          "shadow attack": ("split", _gather_attack)}


def inspect_run(run_dir: str | Path) -> Run:
    """Gather what a report shows from ``run_dir``; one HesigError line for anything else."""
    root = Path(run_dir)
    if root.is_file() and root.suffix == ".safetensors":
        run = Run(kind="fingerprint", title="", threat=THREAT_MODELS["fingerprint"], root=root.parent, file=root)
        try:
            _gather_fingerprint(run, {})
        except HesigError as exc:
            raise CheckpointError(f"{root} is not a hesig fingerprint file ({exc})") from None
        run.versions.update({"hesig (report)": __version__, "python": platform.python_version(),
                             "torch": _dist_version("torch"), "platform": platform.platform()})
        return run
    if not root.is_dir():
        raise HesigError(f"{root} is not a folder: give a hesig run folder (an --out of demo, reconstruct, an attack, "
                         "study-directions, detect-vicious, output-defenses) or a fingerprint file")
    run = Run(kind="", title="", threat="", root=root)
    manifest_path = root / "run.json"
    if manifest_path.exists():
        manifest = read_json(manifest_path, run.inputs)
        kind = manifest.get("kind")
        if kind not in GATHER:
            raise CheckpointError(f"{manifest_path} names a run kind hesig report does not know: {kind!r}")
        config = manifest.get("config")
        run.config = dict(config) if isinstance(config, dict) else {}
        run.versions["hesig (run)"] = manifest.get("hesig_version")
        threat, gather = GATHER[kind]
        run.kind, run.threat = kind, THREAT_MODELS[threat]
        if kind == "fingerprint":
            run.file = root.with_name(root.name[: -len(".chunks")]) if root.name.endswith(".chunks") else root
        gather(run, manifest)
    elif (root / "metrics.json").exists():
        metrics = read_json(root / "metrics.json", run.inputs)
        if metrics.get("artifact") != "reconstruction":
            raise CheckpointError(f"{root / 'metrics.json'} is not a hesig reconstruction's metrics file "
                                  "(and the folder has no run.json)")
        run.kind, run.threat = "reconstruction", THREAT_MODELS["reconstruction"]
        _gather_plain_reconstruction(run, metrics)
    elif (root / "detection.json").exists():
        run.kind, run.threat = "detection", THREAT_MODELS["detection"]
        _gather_flat(run, read_json(root / "detection.json", run.inputs), "hesig detect-vicious")
    elif (root / "defenses.json").exists():
        run.kind, run.threat = "defenses", THREAT_MODELS["defenses"]
        _gather_flat(run, read_json(root / "defenses.json", run.inputs), "hesig output-defenses")
    else:
        raise HesigError(f"{root} is not a hesig run folder: it has no run.json, metrics.json, detection.json or "
                         "defenses.json")
    run.versions.update({"hesig (report)": __version__, "python": platform.python_version(),
                         "torch": _dist_version("torch"), "platform": platform.platform()})
    return run


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _round(value: Any, digits: int = 2) -> Any:
    if isinstance(value, float):
        return round(value, digits) if digits else int(round(value))
    return value


def _pct(value: Any) -> Any:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# -- HTML ----------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1080px;margin:24px auto;padding:0 16px;
color:#1d2430;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #d7dce3;padding-bottom:3px;margin-top:1.6em}
.sub{color:#5b6573;margin-top:0}table{border-collapse:collapse;margin:.5em 0 1em;font-size:.92em}
th,td{border:1px solid #d7dce3;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f2f4f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.attack td{font-weight:600;background:#fff8e6}
code,pre{font-family:SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em;background:#f5f6f8}
pre{padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.threat{background:#f3f7fc;border-left:4px solid #3b73b9;padding:8px 12px}
figure{margin:1em 0;border:1px solid #e3e6eb;padding:8px}figure img{max-width:100%;height:auto}
figcaption{color:#3d4652;font-size:.9em;margin-top:4px}details summary{cursor:pointer;color:#3b73b9}
.note{color:#5b6573;font-size:.9em}
"""


def _e(value: Any) -> str:
    return html.escape("—" if value is None else str(value), quote=True)


def _table(header: list[str], rows: list[list[Any]], row_classes: list[str] | None = None,
           numeric: bool = True) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{_e(row_classes[i])}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{_e(v)}</td>' if numeric and isinstance(v, (int, float)) and not isinstance(v, bool)
                        else f"<td>{_e(v)}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _metrics_section(run: Run) -> str:
    if not run.metric_rows:
        return ""
    rows, classes = [], []
    for key, row in run.metric_rows.items():
        psnr = f"{row.get('psnr_mean', float('nan')):.2f} ± {row.get('psnr_std', float('nan')):.2f}" \
            if isinstance(row.get("psnr_mean"), (int, float)) else row.get("psnr_mean")
        ssim = f"{row.get('ssim_mean', float('nan')):.3f} ± {row.get('ssim_std', float('nan')):.3f}" \
            if isinstance(row.get("ssim_mean"), (int, float)) else row.get("ssim_mean")
        full = row.get("ssim_full_map_mean")
        rows.append([ROW_NAMES[key], psnr, ssim, f"{full:.3f}" if isinstance(full, (int, float)) else "—",
                     _pct(row.get("class_recovery")) if row.get("class_recovery") is not None else "no evaluator",
                     row.get("n"), ROW_NOTES[key]])
        classes.append("attack" if key == "attack" else "")
    table = _table(["row", "PSNR dB (mean ± std)", "SSIM (mean ± std)", "SSIM full map", "class recovery", "n",
                    "what the row is"], rows, classes)
    return (f"<h2>Metrics beside the baselines</h2>{table}<p class='note'>PSNR per image, then the mean. "
            f"{_e(SSIM_NOTE)}. {_e(CLASS_RECOVERY_NOTE)}.</p>")


def _figures_section(run: Run) -> str:
    if run.file is not None:
        return ""
    pngs = sorted(p for p in list(run.root.glob("*.png")) + list(run.root.glob("*/*.png")) if p.is_file())
    parts = []
    for path in pngs[:MAX_FIGURES]:
        data = path.read_bytes()
        if data[:4] != b"\x89PNG":
            continue
        rel = path.relative_to(run.root).as_posix()
        caption = FIGURE_CAPTIONS.get(path.name, "")
        parts.append(f'<figure><img alt="{_e(rel)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                     f"<figcaption><code>{_e(rel)}</code> {_e(caption)}</figcaption></figure>")
    if len(pngs) > MAX_FIGURES:
        parts.append(f"<p class='note'>{len(pngs) - MAX_FIGURES} more figures are in the folder.</p>")
    return "<h2>Figures</h2>" + ("".join(parts) if parts else "<p class='note'>This run wrote no figures.</p>")


def render(run: Run) -> str:
    """The report's HTML text."""
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='generator' content='{GENERATOR}'><title>{_e(run.title)}</title><style>{CSS}</style>"
             f"</head><body><h1>{_e(run.title)}</h1>"
             f"<p class='sub'>Run folder <code>{_e(run.root.resolve())}</code> · report made {_e(made)} by "
             f"<code>hesig report</code></p>",
             f"<h2>Threat model</h2><p class='threat'>{_e(run.threat)}</p>"]
    parts.append(_metrics_section(run))
    parts.append(_figures_section(run))
    for title, header, rows in run.extra_tables:
        parts.append(f"<h2>{_e(title)}</h2>{_table(header, rows)}")
    if run.queries:
        parts.append("<h2>Queries and cost</h2>" + _table(["what", "value"], [[k, _round(v)] for k, v in run.queries]))
    what = [["kind", run.kind]]
    if run.command:
        what.append(["command", run.command])
    what += [[f"config: {k}", json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in run.config.items()]
    what += [[k, v] for k, v in run.versions.items()]
    parts.append("<h2>What was run</h2>" + _table(["", ""], what, numeric=False))
    if run.hashes:
        parts.append("<h2>Hashes</h2>" + _table(["artifact", "hash"], [[k, v] for k, v in sorted(run.hashes.items())]))
    if run.numbers:
        parts.append("<h2>Every number of the run's metrics</h2><details><summary>"
                     f"{len(run.numbers)} values, as recorded</summary>"
                     + _table(["key", "value"], [[k, v] for k, v in run.numbers.items()]) + "</details>")
    inputs = ", ".join(p.relative_to(run.root).as_posix() if run.root in p.parents else str(p) for p in run.inputs)
    parts.append(f"<p class='note'>Read: {_e(inputs)}.</p></body></html>")
    return "".join(parts)


def report_job(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write ``out`` (default ``run_dir/report.html``) for the run in ``run_dir``; returns a summary."""
    from ..core.io import atomic_write_text
    run = inspect_run(run_dir)
    default = run.file.with_name(run.file.name + "." + REPORT_FILE) if run.file is not None else run.root / REPORT_FILE
    target = Path(out) if out is not None else default
    resolved = target.resolve()
    if any(resolved == p.resolve() for p in run.inputs) or (target.exists() and not target.is_file()):
        raise OutputError(f"{target} is one of the run's own files or a folder: the report never replaces an input")
    if target.exists():
        try:
            ours = f"content='{GENERATOR}'" in target.read_text(errors="replace")[:2000]
        except OSError:
            ours = False
        if not ours:
            raise OutputError(f"{target} exists and was not written by hesig report; choose another --out")
    text = render(run)
    atomic_write_text(target, text)
    return {"report": str(target), "kind": run.kind, "title": run.title, "bytes": len(text.encode()),
            "figures": text.count("<figure>")}

