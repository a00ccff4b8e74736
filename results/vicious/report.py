"""Collect `bash results/vicious.sh` runs into TABLE.md, cells.json and figures next to this file.

Usage: python results/vicious/report.py runs/vicious
       python results/vicious/report.py runs/vicious50 --paper-epochs   (PAPER_EPOCHS.md, paper_epochs.json:
       the cells of `EPOCHS=50 RUNS=runs/vicious50 bash results/vicious.sh headline`, beside the table's)
Numbers come only from the runs' metrics.json / detection.json / defenses.json; the paper's
Table 1 values below are the targets they are set against.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

from hesig.attacks.vicious.classifier import resize_images
from hesig.data import load_dataset
from hesig.core.io import atomic_write_json, atomic_write_text
from hesig.evaluation.viz import new_figure, reconstruction_grid, save_figure
from hesig.jobs.vicious import load_vicious

HERE = Path(__file__).resolve().parent
DATASETS = {"mnist": "MNIST", "fashion-mnist": "FMNIST"}
ROWS = [("logits", b) for b in ("0/1", "1/1", "3/1", "5/1", "1/0")] + [("softmax", b) for b in ("1/1", "5/1")]
#: Malekzadeh & Gunduz, Table 1 (mean over 5 seeds): PSNR (dB, dataset-level MSE), SSIM (piq), R, ACC (%).
PAPER = {
    ("mnist", "logits", "0/1"): (None, None, 1.000, 99.54), ("mnist", "logits", "1/1"): (22.090, 0.920, 1.378, 99.53),
    ("mnist", "logits", "3/1"): (22.367, 0.926, 1.394, 99.52), ("mnist", "logits", "5/1"): (22.336, 0.927, 1.392, 99.55),
    ("mnist", "logits", "1/0"): (22.169, 0.926, 1.398, 10.00),
    ("fashion-mnist", "logits", "0/1"): (None, None, 1.000, 94.33),
    ("fashion-mnist", "logits", "1/1"): (20.525, 0.783, 1.243, 94.58),
    ("fashion-mnist", "logits", "3/1"): (20.883, 0.799, 1.272, 94.24),
    ("fashion-mnist", "logits", "5/1"): (20.871, 0.803, 1.271, 94.30),
    ("fashion-mnist", "logits", "1/0"): (21.021, 0.810, 1.281, 10.00),
    ("mnist", "softmax", "1/1"): (16.061, 0.684, 1.037, 99.54), ("mnist", "softmax", "5/1"): (21.036, 0.897, 1.272, 99.62),
    ("fashion-mnist", "softmax", "1/1"): (18.009, 0.684, 1.086, 94.38),
    ("fashion-mnist", "softmax", "5/1"): (19.915, 0.771, 1.204, 94.29),
}


def _ms(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    if not values:
        return "—"
    m = statistics.mean(values) * scale
    s = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _meets(key, cell) -> str:
    """Each of the paper's numbers matched within 1 dB / 0.02 SSIM / 1 point accuracy, or beaten."""
    paper = PAPER[key]
    checks = [cell["acc_mean"] * 100 >= paper[3] - 1.0] if key[2] != "1/0" else []
    if paper[0] is not None:
        checks += [cell["psnr_dataset_mean"] >= paper[0] - 1.0, cell["ssim_mean"] >= paper[1] - 0.02]  # noqa: E501
    return "yes" if all(checks) else "no"


def collect(runs: Path) -> dict:
    cells = {}
    for ds in DATASETS:
        for release, beta in ROWS:
            seeds = sorted((runs / ds / f"{release}_{beta.replace('/', '-')}").glob("seed*/metrics.json"))
            if not seeds:
                continue
            ms = [json.loads(p.read_text()) for p in seeds]
            t = [m["test"] for m in ms]
            cell = {"dataset": ds, "release": release, "beta": beta, "seeds": [m["settings"]["seed"] for m in ms],
                    "epochs": ms[0]["settings"]["epochs"], "n_test": t[0]["n"], "queries_per_run": ms[0]["queries"],
                    "acc": [x["accuracy"] for x in t], "train_seconds": [m["train_seconds"] for m in ms],
                    "best_epoch": [m["best_epoch"] for m in ms], "model_hashes": [m["model_hash"] for m in ms],
                    "torch_threads": ms[0]["torch_threads"], "device": ms[0]["device"],
                    "ran_on": ms[0].get("ran_on", {"device": ms[0]["device"]})}
            for key, src in (("psnr", "psnr_mean"), ("psnr_dataset", "psnr_dataset"), ("ssim", "ssim_mean"),
                             ("ssim_full_map", "ssim_full_map_mean"), ("R", "risk_R")):
                if src in t[0]:
                    cell[key] = [x[src] for x in t]
            for key in ("acc", "psnr", "psnr_dataset", "ssim", "ssim_full_map", "R", "train_seconds"):
                if key in cell:
                    cell[f"{key}_mean"] = statistics.mean(cell[key])
            cell["paper"] = dict(zip(("psnr", "ssim", "R", "acc"), PAPER[(ds, release, beta)]))
            cell["meets_target"] = _meets((ds, release, beta), cell)
            cells[f"{ds}/{release}/{beta}"] = cell
    return cells


def _current_names(cell: dict) -> dict:
    """A cell in today's names: cells collected before the interior convention kept the full-map SSIM
    under "ssim" and the interior one under "ssim_interior" (TABLE.md's 3-epoch cells.json)."""
    if "ssim_interior" not in cell:
        return cell
    return {**cell, "ssim": cell["ssim_interior"], "ssim_full_map": cell["ssim"]}


def _where(cell: dict) -> str:
    """'CPU' or the GPU and torch version a cell trained on (cells from before ran_on was recorded: the CPU)."""
    ran = cell.get("ran_on") or {"device": cell.get("device", "cpu")}
    return f"{ran['gpu']}, torch {ran['torch']}" if ran.get("gpu") else "CPU"


def table(cells: dict) -> str:
    head = ("| outputs | dataset | β^R/β^C | seeds | ACC % (paper) | PSNR dB per image | PSNR dB theirs (paper) | "
            "SSIM interior (paper) | SSIM full map | R (paper) | train s/run | ran on | target met |")
    lines = [head, "|" + "|".join(["---"] * 13) + "|"]
    for key, c in cells.items():
        p = c["paper"]
        fmt = lambda v: "—" if v is None else f"{v:g}"
        lines.append(
            f"| {c['release']} | {DATASETS[c['dataset']]} | {c['beta']} | {len(c['seeds'])} | {_ms(c['acc'], 100, 2)} ({fmt(p['acc'])}) "
            f"| {_ms(c.get('psnr', []), 1, 2)} | {_ms(c.get('psnr_dataset', []), 1, 2)} ({fmt(p['psnr'])}) "
            f"| {_ms(c.get('ssim', []))} ({fmt(p['ssim'])}) | {_ms(c.get('ssim_full_map', []))} "
            f"| {_ms(c.get('R', []))} ({fmt(p['R'])}) | {statistics.mean(c['train_seconds']):.0f} | {_where(c)} "
            f"| {c['meets_target']} |")
    return "\n".join(lines)


def figures(runs: Path, cells: dict) -> None:
    for ds, name in DATASETS.items():
        test = load_dataset(ds, "test")
        x = resize_images(test.images[:10], 32)
        rows, labels = [x], ["original"]
        for release, beta in ROWS:
            run = runs / ds / f"{release}_{beta.replace('/', '-')}" / "seed0"
            if beta == "0/1" or not (run / "metrics.json").exists():
                continue
            model, _ = load_vicious(run)
            rows.append(model.reconstruct(model.outputs(x)))
            labels.append(f"{beta} {release}")
        reconstruction_grid(rows, labels, HERE / f"reconstructions_{ds}.png",
                            f"{name}: G(released outputs) of the first ten test images, seed 0")
    fig = new_figure(11, 4.2)
    for i, (ds, name) in enumerate(DATASETS.items()):
        ax = fig.add_subplot(1, 2, i + 1)
        for release, marker in (("logits", "o"), ("softmax", "s")):
            pts = [(c["acc_mean"] * 100, c["ssim_mean"], c["beta"]) for c in cells.values()
                   if c["dataset"] == ds and c["release"] == release and "ssim_mean" in c]
            ppts = [(c["paper"]["acc"], c["paper"]["ssim"]) for c in cells.values()
                    if c["dataset"] == ds and c["release"] == release and c["paper"]["ssim"] is not None]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=f"ours, {release}")
                for a, s, b in pts:
                    ax.annotate(b, (a, s), fontsize=7, xytext=(3, 3), textcoords="offset points")
            if ppts:
                ax.scatter([p[0] for p in ppts], [p[1] for p in ppts], marker=marker, facecolors="none",
                           edgecolors="grey", label=f"paper, {release}")
        ax.set(xlabel="test accuracy of F (%)", ylabel="SSIM of G(F(x)) (interior, data range 1)",
               title=f"{name}: accuracy vs reconstruction (mean over seeds)")
        ax.legend(fontsize=7)
    save_figure(fig, HERE / "tradeoff.png")


def variant_runs(runs: Path, variant: str, cells: dict) -> list[dict]:
    """Seed-0 cells rerun with other settings (`bash results/vicious.sh long|weights`, under
    runs/<variant>/), each beside the table's seed-0 run of the same cell ("base")."""
    rows = []
    for metrics in sorted((runs / variant).glob("*/*/seed0/metrics.json")):
        run = metrics.parent
        ds, cell = run.parent.parent.name, run.parent.name
        release, beta = cell.split("_")[0], cell.split("_")[1].replace("-", "/")
        base = runs / ds / cell / "seed0"
        if not (base / "metrics.json").exists():
            continue
        row = {"dataset": ds, "release": release, "beta": beta, "paper": cells[f"{ds}/{release}/{beta}"]["paper"]}
        for name, src in (("base", base), (variant, run)):
            m = json.loads((src / "metrics.json").read_text())
            t = m["test"]
            row[name] = {"epochs": m["settings"]["epochs"], "best_epoch": m["best_epoch"],
                         "ssim_weight": m["settings"]["ssim_weight"], "huber_weight": m["settings"]["huber_weight"],
                         "acc": t["accuracy"], "psnr_dataset": t["psnr_dataset"],
                         "ssim": t["ssim_mean"], "ssim_full_map": t["ssim_full_map_mean"], "R": t["risk_R"],
                         "train_seconds": m["train_seconds"], "model_hash": m["model_hash"],
                         "torch_threads": m["torch_threads"], "history": json.loads((src / "history.json").read_text())}
        rows.append(row)
    return rows


def epochs_figure(rows: list[dict]) -> None:
    """epochs.png: validation accuracy and reconstruction loss per epoch of the long runs and their bases."""
    fig = new_figure(11, 4.2)
    ax_acc, ax_rec = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, row in enumerate(rows):
        label, colour = f"{DATASETS[row['dataset']]} {row['beta']} {row['release']}", f"C{i}"
        # Same seed, so the long run's first epochs replay the base run: the base is drawn as markers on
        # top, which shows that as well.
        for name, style in (("long", "-"), ("base", "o")):
            h = row[name]["history"]
            ax_acc.plot([e["epoch"] for e in h], [e["valid_acc"] * 100 for e in h], style, color=colour,
                        mfc="none", label=f"{label}, {row[name]['epochs']} epochs")
            ax_rec.plot([e["epoch"] for e in h], [e["valid_rec"] for e in h], style, color=colour, mfc="none")
        ax_acc.axhline(row["paper"]["acc"], color=colour, lw=0.8, ls=":")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy of F (%)", title="accuracy (dotted: paper, 50 epochs)")
    ax_rec.set(xlabel="epoch", ylabel="validation reconstruction loss (15 SSIM-loss + 3 Huber)",
               title="reconstruction loss of G(F(x))")
    for ax in (ax_acc, ax_rec):
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.legend(fontsize=7)
    save_figure(fig, HERE / "epochs.png")


def variant_table(rows: list[dict], variant: str) -> list[str]:
    lines = ["| outputs | dataset | β^R/β^C | epochs (best) | weights SSIM / Huber | ACC % (paper) | "
             "PSNR dB theirs (paper) | SSIM interior (paper) | R (paper) | CPU train s |", "|" + "|".join(["---"] * 10) + "|"]
    for row in rows:
        p = row["paper"]
        for name in ("base", variant):
            r = row[name]
            lines.append(f"| {row['release']} | {DATASETS[row['dataset']]} | {row['beta']} | {r['epochs']} ({r['best_epoch']}) "
                         f"| {r['ssim_weight']:g} / {r['huber_weight']:g} | {r['acc'] * 100:.2f} ({p['acc']:g}) "
                         f"| {r['psnr_dataset']:.2f} ({p['psnr']:g}) | {r['ssim']:.3f} ({p['ssim']:g}) "
                         f"| {r['R']:.3f} ({p['R']:g}) | {r['train_seconds']:.0f} |")
    return lines + [""]


def extras(runs: Path, prefix: str = "") -> dict:
    """The detection and output-defense results under ``runs``, copied next to this file as
    ``<prefix>detection_<dataset>.*`` and ``<prefix>defenses_<model>.*``."""
    out: dict = {"detection": {}, "defenses": {}}
    for ds in DATASETS:
        src = runs / f"detect_{ds}"
        if (src / "detection.json").exists():
            shutil.copyfile(src / "detection.json", HERE / f"{prefix}detection_{ds}.json")
            shutil.copyfile(src / "detection.png", HERE / f"{prefix}detection_{ds}.png")
            det = json.loads((src / "detection.json").read_text())
            groups: dict = {}
            for r in det["rows"]:
                groups.setdefault(f"{r['beta']} {r['release']}", []).append(r["v"])
            out["detection"][ds] = {"roc": {k: {kk: v[kk] for kk in ("auc", "n_honest", "n_vicious", "paper_threshold_tpr",
                                                                      "paper_threshold_fpr")} for k, v in det["roc"].items()},
                                    "v_by_model_kind": {k: (statistics.mean(v), min(v), max(v)) for k, v in groups.items()},
                                    "settings": det["settings"]}
    for name in ("mnist_logits", "mnist_softmax"):
        src = runs / f"defenses_{name}"
        if (src / "defenses.json").exists():
            shutil.copyfile(src / "defenses.json", HERE / f"{prefix}defenses_{name}.json")
            shutil.copyfile(src / "defenses.png", HERE / f"{prefix}defenses_{name}.png")
            out["defenses"][name] = json.loads((src / "defenses.json").read_text())
    return out


def detection_lines(detection: dict) -> list[str]:
    """Markdown for the detection results of :func:`extras`."""
    md = ["## Detection (Appendix I.2, eq. 19–20)", "",
          "| dataset | group | AUC | honest draws | vicious draws | TPR at v > 0.01 | FPR at v > 0.01 |",
          "|---|---|---|---|---|---|---|"]
    for ds, d in detection.items():
        for g, r in d["roc"].items():
            if g == "all" and len(d["roc"]) == 2:  # one dataset per detection run: "all" repeats it
                continue
            md.append(f"| {DATASETS[ds]} | {g} | {r['auc']:.3f} | {r['n_honest']} | {r['n_vicious']} | "
                      f"{r['paper_threshold_tpr']:.2f} | {r['paper_threshold_fpr']:.2f} |")
    md += ["", "Mean (min, max) vicious-likelihood v per model kind:", ""]
    for ds, d in detection.items():
        md.append(f"- {DATASETS[ds]}: " + "; ".join(f"{k}: {m:.4f} ({lo:.4f}, {hi:.4f})"
                                                  for k, (m, lo, hi) in sorted(d["v_by_model_kind"].items())))
    return md + [""]


def main(runs: Path) -> None:
    cells = collect(runs)
    if not cells:  # never replace the committed tables with an empty report
        sys.exit(f"error: no vicious runs under {runs} (expected <dataset>/<release>_<beta>/seed*/metrics.json); "
                 "nothing written")
    figures(runs, cells)
    ext = extras(runs)
    longer, weights = variant_runs(runs, "long", cells), variant_runs(runs, "weights", cells)
    if longer:
        epochs_figure(longer)
    atomic_write_json(HERE / "cells.json", {"cells": cells, **ext, "longer_training": longer, "loss_weights": weights})
    md = ["# Vicious classifiers (Malekzadeh & Gündüz): Table 1 on MNIST and Fashion-MNIST", "",
          "Made by `bash results/vicious.sh` then `python results/vicious/report.py runs/vicious` "
          "(numbers: cells.json). Each run: `hesig attack vicious` on the whole training split (90 % train, "
          "10 % validation for model selection), scored on all 10,000 test images = 10,000 queries (one "
          "released vector per image, nothing else reaches the server).", "",
          "\"PSNR theirs\" = 10 log10(1/MSE) with one MSE over the test set (their code); \"SSIM interior\" "
          "= window never leaves the image (piq, their code); \"SSIM\" and \"PSNR per image\" = hesig's "
          "(full-image SSIM, mean of per-image PSNR). Target: paper − 1 dB PSNR (theirs), − 0.02 SSIM "
          "(interior), − 1 point accuracy, or better.", "", table(cells), ""]
    if longer:
        md += ["## Longer training (`bash results/vicious.sh long`, seed 0)", "",
               "The same command with more epochs, set against the seed-0 run of the table above. "
               "Curves per epoch: epochs.png.", "", *variant_table(longer, "long")]
    if weights:
        md += ["## Loss weights (`bash results/vicious.sh weights`, seed 0)", "",
               "The same command with a lighter reconstruction loss (--ssim-weight 1 --huber-weight 5), set "
               "against the seed-0 run of the table above (the issue's weights, 15 / 3).", "",
               *variant_table(weights, "weights")]
    if ext["detection"]:
        md += detection_lines(ext["detection"])
    if ext["defenses"]:
        md += ["## Output defenses (Appendix I)", "",
               "| model | defense | ACC % | SSIM fixed G | SSIM adaptive G | PSNR theirs fixed | PSNR theirs adaptive |",
               "|---|---|---|---|---|---|---|"]
        for name, d in ext["defenses"].items():
            for r in d["rows"]:
                a = r.get("adaptive")
                a_ssim = "—" if a is None else f"{a['ssim_mean']:.3f}"
                a_psnr = "—" if a is None else f"{a['psnr_dataset']:.2f}"
                md.append(f"| {name} | {r['defense']} | {r['accuracy'] * 100:.2f} | {r['fixed']['ssim_mean']:.3f} | "
                          f"{a_ssim} | {r['fixed']['psnr_dataset']:.2f} | {a_psnr} |")
        md.append("")
    atomic_write_text(HERE / "TABLE.md", "\n".join(md))
    print("\n".join(md))


def paper_epochs(runs: Path) -> None:
    """The cells trained at the paper's 50 epochs, set against the same cells of the committed table."""
    cells = collect(runs)
    if not cells:
        sys.exit(f"error: no vicious runs under {runs}; nothing written")
    table_cells = json.loads((HERE / "cells.json").read_text())["cells"]
    atomic_write_json(HERE / "paper_epochs.json", {"runs": str(runs), "cells": cells})
    seeds = sorted({s for c in cells.values() for s in c["seeds"]})
    md = ["# Vicious classifiers at the paper's 50 epochs", "",
          f"Made by `EPOCHS=50 RUNS={runs} bash results/vicious.sh table` (on a GPU: `results/gpu_run.sh`; "
          f"without one, `... headline` runs the four headline cells) then "
          f"`python results/vicious/report.py {runs} --paper-epochs` (numbers: paper_epochs.json). The same "
          f"command as TABLE.md's cells but for the number of epochs; seeds {', '.join(map(str, seeds))}, so a "
          "cell with one seed is one run, not a mean over seeds. 'ran on' names the device; several runs "
          "shared it, so train seconds are wall time under load.", "", table(cells), ""]
    cpu_file = HERE / "paper_epochs_cpu.json"  # the two cells an earlier round trained at 50 epochs on the CPU
    if cpu_file.exists():
        cpu = {k: c for k, c in json.loads(cpu_file.read_text())["cells"].items()}
        md += ["The same seed trained on the CPU (an earlier round, paper_epochs_cpu.json; other bytes, "
               "since CPU and GPU kernels round differently):", "", table(cpu), ""]
    md += ["The same cells in TABLE.md (3 epochs, mean over seeds):", "",
           table({k: _current_names(table_cells[k]) for k in cells if k in table_cells}), ""]
    ext = extras(runs, prefix="paper_epochs_")  # `RUNS=... bash results/vicious.sh defenses` / `detect`
    defenses = ext["defenses"]
    if ext["detection"]:
        md += [f"Detection on the 50-epoch models (`RUNS={runs} bash results/vicious.sh detect`, the same "
               "settings as TABLE.md's; files: paper_epochs_detection_*.json / .png):", "",
               *detection_lines(ext["detection"])]
    if defenses:
        md += ["## Output defenses on the 50-epoch models (Appendix I)", "",
               f"`RUNS={runs} bash results/vicious.sh defenses` (the same defenses and settings as TABLE.md's, on "
               "the 50-epoch seed-0 models; first 2,000 test images; the adaptive G gets one more epoch on "
               "defended training outputs). Files: paper_epochs_defenses_*.json / .png. The 3-epoch rows: "
               "TABLE.md.", "",
               "| model | defense | ACC % | SSIM interior (full map), fixed G | SSIM interior (full map), adaptive G | "
               "PSNR theirs fixed | PSNR theirs adaptive |",
               "|---|---|---|---|---|---|---|"]

        def ssim(m):
            return "—" if m is None else f"{m['ssim_mean']:.3f} ({m['ssim_full_map_mean']:.3f})"

        for name, d in defenses.items():
            for r in d["rows"]:
                a = r.get("adaptive")
                a_psnr = "—" if a is None else f"{a['psnr_dataset']:.2f}"
                md.append(f"| {name} | {r['defense']} | {r['accuracy'] * 100:.2f} | {ssim(r['fixed'])} | {ssim(a)} | "
                          f"{r['fixed']['psnr_dataset']:.2f} | {a_psnr} |")
        md.append("")
    atomic_write_text(HERE / "PAPER_EPOCHS.md", "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Tables and figures of results/vicious from the runs of results/vicious.sh.")
    parser.add_argument("runs", nargs="?", default="runs/vicious", type=Path, help="the runs folder [runs/vicious]")
    parser.add_argument("--paper-epochs", action="store_true",
                        help="write PAPER_EPOCHS.md and paper_epochs.json from these runs (the 50-epoch cells)")
    args = parser.parse_args()
    paper_epochs(args.runs) if args.paper_epochs else main(args.runs)
