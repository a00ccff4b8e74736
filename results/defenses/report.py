"""Table, Pareto figure and answer of the defense study (issue 19) from its run folders.

    python results/defenses/report.py runs/defenses-mnist-hecnn runs/defenses-mnist-lenet5 ...

Writes results/defenses/{cells.json, TABLE.md, README_SECTION.md, pareto.png, answer.json}.
"Adaptive" = the strongest (highest SSIM, interior convention) attack on a defense by an attacker who knows
it -- any search of the study, with the decoder trained through the defense or the undefended
one, whichever scores higher -- within 10x the queries of the same study's undefended search;
"non-adaptive" = the paper's search and a decoder trained on undefended fingerprints.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hesig.core.io import atomic_write_json, atomic_write_text  # noqa: E402
from hesig.evaluation.metrics import ssim_window  # noqa: E402
from hesig.jobs.defense_study import collect_cells  # noqa: E402

HERE = Path(__file__).resolve().parent
MAX_RATIO = 10.0
ACC_POINTS = 1.0
WINDOW = ssim_window(28, 28)


def current_ssim_keys(cell: dict) -> dict:
    """A cell in today's SSIM keys: ``ssim`` = the interior convention (the papers'), ``ssim_full_map``.

    Cells written before hesig scored SSIM on the map's interior carry ``ssim`` (full map) and
    ``ssim_interior`` -- both measured on the same reconstructions -- for the decoders and the
    baselines; they are renamed here, nothing is recomputed. Cells in today's keys pass unchanged.
    """
    def decoder(r: dict) -> dict:
        if "ssim_interior" not in r:
            return r
        out = {k: v for k, v in r.items() if k not in ("ssim", "ssim_std", "ssim_interior")}
        return {**out, "ssim": r["ssim_interior"], "ssim_full_map": r["ssim"], "ssim_full_map_std": r.get("ssim_std")}

    def baseline(r: dict) -> dict:
        if "ssim_interior" not in r:
            return r
        out = {k: v for k, v in r.items() if k not in ("ssim_mean", "ssim_std", "ssim_interior")}
        return {**out, "ssim_mean": r["ssim_interior"], "ssim_full_map_mean": r["ssim_mean"],
                "ssim_full_map_std": r.get("ssim_std")}

    cell = dict(cell)
    if isinstance(cell.get("decoders"), dict):
        cell["decoders"] = {name: decoder(r) for name, r in cell["decoders"].items()}
    if isinstance(cell.get("baselines"), dict):
        cell["baselines"] = {name: baseline(r) for name, r in cell["baselines"].items()}
    return cell


def family(defense: str) -> str:
    return defense.split(":")[0]


def summarize(cells: list[dict]) -> dict:
    """Per (dataset, arch, defense): honest cost, the non-adaptive and the best adaptive attack."""
    rows = {}
    by = defaultdict(list)
    for c in cells:
        by[(c["dataset"], c["arch"], c["defense"])].append(c)
    for key, group in by.items():
        ref = next((c for c in cells if c["dataset"] == key[0] and c["arch"] == key[1] and c["defense"] == "none"
                    and c["attacker"] == "standard"), None)
        first = group[0]
        base = ref["baselines"] if ref else first.get("baselines")
        # The strongest attack that knows the defense: any search and either decoder, within 10x the queries.
        adaptive = [(c, name, r) for c in group if not c.get("refused") and (c.get("query_ratio") or 0) <= MAX_RATIO
                    for name, r in c["decoders"].items()]
        best = max(adaptive, key=lambda cd: cd[2]["ssim"], default=None)
        plain = next((c for c in group if c["attacker"] == "standard" and not c.get("refused")), None)
        rows[key] = {
            "dataset": key[0], "arch": key[1], "defense": key[2], "family": family(key[2]),
            "honest_accuracy": first["honest_accuracy"],
            "accuracy_loss_points": 100 * ((ref or first)["honest_accuracy"] - first["honest_accuracy"]),
            "honest_refused": first.get("honest_refused") or {},
            "class_mean": {k: base["baseline_class_mean"][k] for k in ("ssim_mean", "ssim_full_map_mean", "psnr_mean")},
            "mean_image": {k: base["baseline_mean_image"][k] for k in ("ssim_mean", "ssim_full_map_mean", "psnr_mean")},
            "non_adaptive": None if plain is None or "non-adaptive" not in plain["decoders"] else {
                **plain["decoders"]["non-adaptive"], "attacker": "standard",
                "queries_per_fingerprint": plain["queries_per_fingerprint"], "query_ratio": plain["query_ratio"],
                "tpr": plain["detection"]["tpr"]},
            "adaptive": None if best is None else {
                **best[2], "attacker": best[0]["attacker"] + ("" if best[1] == "adaptive" else f" ({best[1]} decoder)"),
                "queries_per_fingerprint": best[0]["queries_per_fingerprint"],
                "query_ratio": best[0]["query_ratio"], "tpr": best[0]["detection"]["tpr"]},
        }
    return rows


def answer(rows: dict) -> dict:
    """The README's question, per (dataset, arch)."""
    out = {}
    for (dataset, arch) in sorted({(r["dataset"], r["arch"]) for r in rows.values()}):
        mine = [r for r in rows.values() if (r["dataset"], r["arch"]) == (dataset, arch) and r["defense"] != "none"]
        ok = [r for r in mine if r["accuracy_loss_points"] <= ACC_POINTS and r["adaptive"] is not None]
        gap = lambda r: r["adaptive"]["ssim"] - r["class_mean"]["ssim_mean"]  # noqa: E731
        winners = [r["defense"] for r in ok if gap(r) <= 0]
        closest = min(ok, key=gap, default=None)
        out[f"{dataset}/{arch}"] = {
            "defenses_within_1_point": [r["defense"] for r in ok],
            "reach_class_mean_ssim": winners,
            "closest": None if closest is None else {
                "defense": closest["defense"], "attacker": closest["adaptive"]["attacker"],
                "ssim": closest["adaptive"]["ssim"], "class_mean_ssim": closest["class_mean"]["ssim_mean"],
                "psnr": closest["adaptive"]["psnr"], "class_mean_psnr": closest["class_mean"]["psnr_mean"],
                "query_ratio": closest["adaptive"]["query_ratio"],
                "accuracy_loss_points": closest["accuracy_loss_points"],
                "honest_refused": closest["honest_refused"]},
        }
    return out


def table(cells: list[dict], rows: dict) -> str:
    lines = ["# Defenses against the perturbation-signature attack", "",
             "Generated by `results/defenses/report.py` from `bash results/defenses/run.sh` (the `hesig study-defenses` "
             f"runs). Every cell: the victims' mean **SSIM** (interior of the map, scikit-image / piq's convention, as the "
             f"papers score it; Gaussian window {WINDOW[0]}, σ {WINDOW[1]}, data range 1.0) / **SSIM full map** "
             "(torchmetrics' mean over the reflect-padded map) / **PSNR** dB / **class recovery** (an independent evaluator) / **queries per "
             "fingerprint** (x the undefended search) / detector **TPR at 1 % FPR** (the FPR re-measured on a third "
             "honest set). *Adaptive* decoder: trained on the attacker's own images fingerprinted through the same "
             "defense and search; *non-adaptive*: trained on undefended fingerprints. Honest accuracy: top-1 accuracy "
             "of the class the client acts on, whole test split, under the defense.", ""]
    for (dataset, arch) in sorted({(c["dataset"], c["arch"]) for c in cells}):
        mine = [c for c in cells if (c["dataset"], c["arch"]) == (dataset, arch)]
        first = mine[0]
        base = next((c["baselines"] for c in mine if c.get("baselines")), None)
        lines += [f"## {arch} on {dataset} ({first['n_train']} attacker training images, {first['n_test']} victims, "
                  f"{first['count']} {first['family']} directions)", "",
                  "| defense | honest acc. | attacker | decoder | SSIM / full map / PSNR / class | q/fp (x) | TPR@1%FPR (FPR) |",
                  "|---|---|---|---|---|---|---|"]
        for c in mine:
            acc = f"{100 * c['honest_accuracy']:.2f} %"
            refused = c.get("honest_refused") or {}
            if refused:
                acc += " (refuses " + ", ".join(f"{100 * v:.0f} % {k}" for k, v in refused.items() if v) + ")"
            if c.get("refused"):
                lines.append(f"| {c['defense']} | {acc} | {c['attacker']} | - | refused: {c['refused']} | - | - |")
                continue
            det = c["detection"]
            for name, r in sorted(c["decoders"].items()):
                lines.append(f"| {c['defense']} | {acc} | {c['attacker']} | {name} | {r['ssim']:.3f} / "
                             f"{r['ssim_full_map']:.3f} / {r['psnr']:.2f} / {100 * r['class_recovery']:.0f} % | "
                             f"{c['queries_per_fingerprint']:.0f} ({c['query_ratio']:.1f}x) | "
                             f"{det['tpr']:.2f} ({det['fpr']:.3f}) |")
        if base:
            for key, label in (("baseline_class_mean", "class-mean baseline"), ("baseline_mean_image", "mean-image baseline")):
                b = base[key]
                lines.append(f"| *{label}* | | | | {b['ssim_mean']:.3f} / {b['ssim_full_map_mean']:.3f} / {b['psnr_mean']:.2f} / "
                             f"{100 * (b['class_recovery'] or 0):.0f} % | 0 | |")
        lines.append("")
    return "\n".join(lines) + "\n"


def readme_tables(rows: dict) -> str:
    """The README's summary: one table per (dataset, arch); every row is checked against the
    README by tests/test_claims.py."""
    out = []
    for (dataset, arch) in sorted({(r["dataset"], r["arch"]) for r in rows.values()}):
        mine = sorted((r for r in rows.values() if (r["dataset"], r["arch"]) == (dataset, arch)),
                      key=lambda r: (r["defense"] != "none", r["family"], r["accuracy_loss_points"]))
        cm = mine[0]["class_mean"]
        out += [f"**{arch} on {dataset}** (class-mean baseline: SSIM {cm['ssim_mean']:.3f} (full map "
                f"{cm['ssim_full_map_mean']:.3f}), PSNR {cm['psnr_mean']:.2f} dB)", "",
                "| defense | honest acc. (lost) | non-adaptive SSIM / PSNR | strongest attacker that knows it | its SSIM / PSNR / class | queries (x undefended) | detector TPR |",
                "|---|---|---|---|---|---|---|"]
        for r in mine:
            refused = ", ".join(f"{100 * v:.0f} % of {k}" for k, v in r["honest_refused"].items() if v)
            acc = f"{100 * r['honest_accuracy']:.2f} % ({r['accuracy_loss_points']:+.2f})" + (f"; refuses {refused}" if refused else "")
            na = r["non_adaptive"]
            na_text = "-" if na is None else f"{na['ssim']:.3f} / {na['psnr']:.2f}"
            a = r["adaptive"]
            if a is None:
                out.append(f"| {r['defense']} | {acc} | {na_text} | - | - | - | - |")
                continue
            out.append(f"| {r['defense']} | {acc} | {na_text} | {a['attacker']} | {a['ssim']:.3f} / {a['psnr']:.2f} / "
                       f"{100 * a['class_recovery']:.0f} % | {a['queries_per_fingerprint']:.0f} ({a['query_ratio']:.1f}x) | "
                       f"{a['tpr']:.2f} |")
        out.append("")
    return "\n".join(out)


def figure(rows: dict, path: Path) -> None:
    groups = sorted({(r["dataset"], r["arch"]) for r in rows.values()})
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.6), squeeze=False)
    colors = {}
    for ax, (dataset, arch) in zip(axes[0], groups):
        mine = [r for r in rows.values() if (r["dataset"], r["arch"]) == (dataset, arch)]
        none = next((r for r in mine if r["defense"] == "none"), None)
        for fam in sorted({r["family"] for r in mine} - {"none"}):
            # Each curve starts at the undefended point: the trade-off a defender buys with strength.
            pts = ([none] if none else []) + sorted((r for r in mine if r["family"] == fam),
                                                     key=lambda r: r["accuracy_loss_points"])
            color = colors.setdefault(fam, f"C{len(colors)}")
            for kind, style in (("adaptive", "-o"), ("non_adaptive", "--x")):
                xy = [(r["accuracy_loss_points"], r[kind]["ssim"] - r["class_mean"]["ssim_mean"]) for r in pts if r[kind]]
                if xy:
                    ax.plot(*zip(*xy), style, color=color, label=f"{fam} ({kind.replace('_', '-')})", alpha=0.9)
        ax.axhline(0, color="k", lw=0.8)
        ax.text(0.02, 0.002, "class-mean baseline", fontsize=7, transform=ax.get_yaxis_transform())
        ax.axvline(ACC_POINTS, color="grey", lw=0.8, ls=":")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("honest top-1 accuracy lost (points, symlog)")
        ax.set_ylabel("attacker SSIM minus class-mean SSIM (interior, data range 1)")
        title = f"{arch} on {dataset}"
        if none and none["adaptive"]:
            title += f"\n(undefended: SSIM {none['adaptive']['ssim']:.3f}, class mean {none['class_mean']['ssim_mean']:.3f})"
        ax.set_title(title, fontsize=9)
        if none and none["adaptive"]:
            ax.plot([0], [none["adaptive"]["ssim"] - none["class_mean"]["ssim_mean"]], "k*", ms=10, label="undefended")
        ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.suptitle("Defenses: utility loss against leakage; adaptive = best attacker within 10x the undefended queries",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def dedupe(cells: list[dict]) -> tuple[list[dict], list[dict]]:
    """One cell per (dataset, arch, defense, attacker); a cell two study folders both ran (the
    undefended reference) must agree to the last digit (same settings and seeds), else it is an error."""
    kept, repeats = {}, []
    for c in cells:
        key = (c["dataset"], c["arch"], c["defense"], c["attacker"])
        if key in kept:
            same = kept[key]["decoders"] == c["decoders"] and kept[key].get("queries_per_fingerprint") == c.get("queries_per_fingerprint")
            if not same:
                raise SystemExit(f"error: {key} differs between two study folders")
            repeats.append({"cell": list(key), "identical": True})
            continue
        kept[key] = c
    return list(kept.values()), repeats


def main(dirs: list[str]) -> None:
    cells, repeats = dedupe([current_ssim_keys(c) for c in collect_cells(*dirs)])
    cells.sort(key=lambda c: (c["dataset"], c["arch"], c["defense"] != "none", c["defense"], c["attacker"]))
    for c in cells:  # the honest feature sets stay in the run folders
        c.pop("honest_features", None)
        if c.get("detection"):
            c["detection"] = {k: v for k, v in c["detection"].items()}
    rows = summarize(cells)
    atomic_write_json(HERE / "cells.json", cells)
    atomic_write_text(HERE / "TABLE.md", table(cells, rows))
    atomic_write_json(HERE / "answer.json", {"criterion": {"accuracy_loss_points_at_most": ACC_POINTS,
                                                           "query_ratio_at_most": MAX_RATIO,
                                                           "ssim_at_most": "class-mean baseline (interior SSIM)"},
                                             "answers": answer(rows), "repeated_cells": repeats,
                                             "study_folders": [str(d) for d in dirs],
                                             "summary": [rows[k] for k in sorted(rows)]})
    atomic_write_text(HERE / "README_SECTION.md", readme_tables(rows))
    figure(rows, HERE / "pareto.png")
    print(json.dumps(answer(rows), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
