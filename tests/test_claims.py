"""Every time the README, `hesig demo --help` and the notebook intros quote is the committed
benchmark's number (benchmarks/demo.json, benchmarks/notebooks.json), rounded to whole seconds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DEMO = json.loads((ROOT / "benchmarks" / "demo.json").read_text())
NOTEBOOKS = json.loads((ROOT / "benchmarks" / "notebooks.json").read_text())["notebooks"]


def _one(pattern: str, text: str = README) -> re.Match:
    found = list(re.finditer(pattern, text))
    assert len(found) == 1, f"expected one match of {pattern!r}, found {len(found)}"
    return found[0]


def test_the_readme_quotes_the_demo_benchmark():
    seconds = round(DEMO["wall_seconds"])
    quick = _one(r"hesig demo +# bundled 8x8 digits, no download, (\d+) s on 2 cores of an idle Xeon \(benchmarks/demo\.json\)")
    assert int(quick.group(1)) == seconds
    m = _one(r"`hesig demo` on the bundled digits \(mlp target\) finished in (\d+) s .*?: PSNR ([\d.]+) dB,\s+"
             r"SSIM ([\d.]+), class recovery ([\d.]+) % at (\d+) queries per image")
    assert int(m.group(1)) == seconds
    metrics = DEMO["metrics"]
    assert float(m.group(2)) == metrics["psnr_db"] and float(m.group(3)) == metrics["ssim"]
    assert float(m.group(4)) == metrics["class_recovery_percent"] and int(m.group(5)) == metrics["queries_per_image"]


def test_the_readme_quotes_the_notebook_benchmark():
    m = _one(r"01 (\d+) s, 02 (\d+) s, 03 (\d+) s, 04 (\d+) s, 05 (\d+) s")
    quoted = [int(v) for v in m.groups()]
    assert quoted == [round(NOTEBOOKS[name]["seconds"]) for name in sorted(NOTEBOOKS)]


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_each_notebook_intro_quotes_its_benchmark(name):
    intro = "".join(json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"][0]["source"])
    assert f"{round(NOTEBOOKS[name]['seconds'])} s" in intro and "benchmarks/notebooks.json" in intro
    assert not re.search(r"about (a|one|two|three) minutes?", intro), "an unmeasured time claim"


def test_demo_help_points_at_the_benchmark_instead_of_guessing(cli):
    code, out, _ = cli.run("demo", "--help")
    assert code == 0 and "benchmarks/demo.json" in out and "minute" not in out


SERVICE = json.loads((ROOT / "benchmarks" / "service.json").read_text())


def _pct(value: float) -> str:
    return f"{value * 100:+.1f} %".replace("-", "−")


def test_the_readme_quotes_the_service_benchmark():
    s = SERVICE
    n = s["in_process"]["images"]
    base = _one(r"\| in process \(`--oracle ckks`\), mean of 2 runs \| ([\d.]+) s \|")
    assert float(base.group(1)) == round(s["in_process_seconds_mean"] / n, 1)
    for label, key in (("HTTP, the victim encrypting ahead \\(default\\)", "http_one_victim"),
                       ("HTTP, `--no-prefetch`", "http_one_victim_no_prefetch")):
        r = s[key]
        m = _one(rf"\| {label} \| ([\d.]+) s \| ([−+][\d.]+ %) \| ([−+][\d.]+ %) \| (\d+) of (\d+) \|")
        assert float(m.group(1)) == round(r["seconds_wall"] / n, 1)
        assert m.group(2) == _pct(r["overhead_vs_in_process_wall"]) and m.group(3) == _pct(r["overhead_vs_in_process"])
        assert (int(m.group(4)), int(m.group(5))) == (r["pairs_with_different_eps"], r["pairs"])
    c = s["http_concurrent"]
    m = _one(r"(\d+) victims at once: (\d+) of them completed in ([\d.]+) s \(([\d.]+) fingerprints per minute\); "
             r"server peak RSS ([\d,]+) MB")
    assert [int(m.group(1)), int(m.group(2)), float(m.group(3)), float(m.group(4))] == \
        [c["victims"], c["completed"], c["seconds"], c["fingerprints_per_minute"]]
    assert int(m.group(5).replace(",", "")) == c["server_peak_rss_mb"]
    one = _one(r"one victim: server peak RSS ([\d,]+) MB")
    assert int(one.group(1).replace(",", "")) == s["http_one_victim"]["server_peak_rss_mb"]
    soak = _one(r"Soak\*\*: (\d+) one-image jobs completed, (\d+) failed, in ([\d.]+) s")
    assert [int(soak.group(1)), int(soak.group(2)), float(soak.group(3))] == \
        [s["soak"]["jobs_completed"], s["soak"]["jobs_failed"], s["soak"]["seconds"]]


DEFENSES = ROOT / "results" / "defenses"


def test_the_readme_quotes_the_defense_study():
    """Every row of the study's summary tables (written by results/defenses/report.py) is in the README."""
    section = (DEFENSES / "README_SECTION.md").read_text()
    rows = [line for line in section.splitlines() if line.startswith(("| ", "**"))]
    assert len(rows) > 10
    for line in rows:
        assert line in README, f"the README does not quote: {line}"
    cells = json.loads((DEFENSES / "cells.json").read_text())
    assert {(c["dataset"], c["arch"]) for c in cells} >= {("mnist", "hecnn"), ("mnist", "lenet5"), ("fashion-mnist", "hecnn")}


@pytest.mark.parametrize("path", sorted(DEFENSES.glob("ckks_confirm-*.json")), ids=lambda p: p.stem)
def test_the_readme_quotes_each_ckks_confirmation(path):
    s = json.loads(path.read_text())
    assert s["victims"] >= 20
    m = _one(rf"`{re.escape(s['ckks_client_policy'])}` against `{re.escape(s['attacker'])}`, {s['victims']} victims: "
             r"CKKS SSIM ([\d.]+) / PSNR ([\d.]+) dB, plaintext SSIM ([\d.]+) / PSNR ([\d.]+) dB")
    quoted = [float(v) for v in m.groups()]
    # Runs from before the interior SSIM convention stored it as ssim_interior (ssim_mean: full map).
    key = "ssim_interior" if "ssim_interior" in s["metrics"]["ckks"] else "ssim_mean"
    assert quoted == [round(s["metrics"]["ckks"][key], 3), round(s["metrics"]["ckks"]["psnr_mean"], 2),
                      round(s["metrics"]["plaintext"][key], 3), round(s["metrics"]["plaintext"]["psnr_mean"], 2)]


SCALING = json.loads((ROOT / "benchmarks" / "scaling.json").read_text())


def test_the_readme_quotes_the_scaling_benchmark():
    ckks, plain, plan = SCALING["ckks"], SCALING["plaintext"], SCALING["plan_10000_mnist_ckks_in_one_hour"]
    ray = _one(r"\| Ray workers: wall seconds \| ([\d.]+) \| ([\d.]+) \| \*\*([\d.]+)×\*\* \|")
    assert [float(v) for v in ray.groups()] == [ckks["runs"]["1"]["wall_seconds"], ckks["runs"]["2"]["wall_seconds"],
                                                ckks["speedup_2_workers"]]
    cpu = _one(r"\| Ray workers: CPU seconds inside the workers \(sum\) \| ([\d.]+) \| ([\d.]+) \(([+−])([\d.]+) %\)")
    sign = -1 if cpu.group(3) == "−" else 1
    assert [float(cpu.group(1)), float(cpu.group(2)), sign * float(cpu.group(4))] == [
        ckks["runs"]["1"]["chunk_cpu_seconds_sum"], ckks["runs"]["2"]["chunk_cpu_seconds_sum"],
        round(ckks["cpu_seconds_increase_2_workers"] * 100, 1)]
    bare = ckks["without_ray"]
    procs = _one(r"\| no Ray, plain processes started together: wall seconds \| ([\d.]+) \| ([\d.]+) \| \*\*([\d.]+)×\*\* \|")
    assert [float(v) for v in procs.groups()] == [bare["1"]["wall_seconds"], bare["2"]["wall_seconds"],
                                                  bare["speedup_2_processes"]]
    _one(rf"Ray reaches {ckks['ray_speedup_over_machine_ceiling']} of that")
    _one(rf"Two Ray workers fingerprint the {ckks['images']} images at \*\*{ckks['runs']['2']['wall_seconds'] / ckks['images']:.1f} s per "
         rf"fingerprint\*\* through CKKS")
    _one(rf"\| wall seconds \| {plain['runs']['in-process']['wall_seconds']} \| {plain['runs']['1']['wall_seconds']} \| "
         rf"{plain['runs']['2']['wall_seconds']} \(\*\*{plain['speedup_2_workers']:.2f}×\*\* over 1 worker\) \|")
    _one(rf"\*\*{plan['nodes']} such nodes\*\* \({plan['nodes'] * plan['node']['workers_per_node']} workers\): "
         rf"{plan['images_per_worker']} images per worker × {plan['cpu_seconds_per_image']:.1f} s = "
         rf"{round(plan['hours_at_measured_cpu_cost'] * 60)} minutes")
    assert ckks["files_1_vs_2_workers"]["eps_within_2rtol"] and plain["runs"]["2"]["same_bytes_as_in_process"]


NOISE = json.loads((ROOT / "benchmarks" / "ckks_noise.json").read_text())


def test_the_readme_quotes_the_ckks_noise_benchmark():
    def share(row):
        return f"{100 * row['disagreements'] / row['queries']:.1f}%" if row["disagreements"] else "0"

    for s in NOISE["sets"]:
        row = (f"| {s['name']} | {s['queries']:,} | " + " | ".join(share(r) for r in s["by_abs_relative_distance"])
               + f" | {s['max_abs_relative_distance_at_disagreement']:.1e} | {s['max_abs_margin_at_disagreement']:.3f} |")
        assert row in README, row
    default, _, scale22, big = NOISE["sets"]
    _one(rf"bounds what CKKS noise does to ε: {default['max_abs_relative_distance_at_disagreement']:.1e} with the default")
    _one(rf"2\^22 reaches {scale22['max_abs_relative_distance_at_disagreement']:.1e}, over rtol 1e-3")
    _one(rf"narrows it to {big['max_abs_relative_distance_at_disagreement']:.1e} at twice the ring")
    _one(rf"disagree on {100 * (1 - default['plaintext_bit_matches_margin_sign']):.2f}% of all the queries")


def test_the_readme_quotes_the_search_rounds_benchmark():
    rows = {(r["grid"], r["rtol"]): r for r in json.loads((ROOT / "benchmarks" / "search_rounds.json").read_text())["rows"]}
    m = _one(r"(?s)needs\s+([\d.]+) \(max (\d)\), ([\d,]+) queries at rtol 1e-2; a geometric grid.*?needs ([\d.]+) \(max (\d)\), "
             r"([\d,]+) queries:")
    for (mean, most, queries), key in ((m.groups()[:3], ("linear G8", 0.01)), (m.groups()[3:], ("geometric G40", 0.01))):
        row = rows[key]
        assert float(mean) == round(row["evaluations_mean"], 2) and int(most) == row["evaluations_max"]
        assert int(queries.replace(",", "")) == round(row["queries_per_fingerprint_mean"])
    assert rows[("geometric G40", 0.01)]["evaluations_max"] == 2 and rows[("geometric G40", 0.001)]["evaluations_max"] == 3


def test_the_readme_quotes_the_shadow_recheck():
    quotes = {  # (shadow data, structure): the README sentence that quotes the cell
        ("same", "different"): r"conv1 reaches \*\*([\d.]+) dB / SSIM ([\d.]+) full map \(([\d.]+) interior\)\*\*",
        ("same", "same"): r"the same-net cell on the same target reaches ([\d.]+) / ([\d.]+)\s+full map \(([\d.]+) interior\)",
        ("disjoint", "different"): r"the Table 5 net reaches \*\*([\d.]+) dB / SSIM ([\d.]+) full map \(([\d.]+) interior\)\*\*",
        ("disjoint", "same"): r"and the same net ([\d.]+) / ([\d.]+)\s+full map \(([\d.]+) interior\)",
    }
    for (data, structure), quote in quotes.items():
        cell = json.loads((ROOT / "results" / "collab_inference" / f"recheck_shadow_{data}_{structure}_conv1.json").read_text())
        a = cell["metrics"]["attack"]
        assert [float(v) for v in _one(quote).groups()] == [round(a["psnr_mean"], 2), round(a["ssim_full_map_mean"], 3),
                                                            round(a["ssim_mean"], 3)]
        assert cell["model_hash"] == "1287de45719ef94c" and cell["n"] == 1000 and cell["shadow_data"] == data


def test_the_readme_results_quote_the_demo_runs_in_both_ssim_conventions():
    runs = {arch: json.loads((ROOT / "results" / f"mnist_{arch}" / "summary.json").read_text())["metrics"]["metrics"]
            for arch in ("hecnn", "lenet5")}
    table = (ROOT / "results" / "TABLE.md").read_text().strip()
    assert table in README
    m = _one(r"much of their style — SSIM ([\d.]+)–([\d.]+) against\s+([\d.]+) for the best")
    assert [float(v) for v in m.groups()] == [round(runs["lenet5"]["attack"]["ssim_mean"], 3),
                                              round(runs["hecnn"]["attack"]["ssim_mean"], 3),
                                              round(runs["hecnn"]["baseline_class_mean"]["ssim_mean"], 3)]
    m = _one(r"widens the gap: \+([\d.]+) \(hecnn\) and\s+\+([\d.]+) \(lenet5\) over the class mean, against \+([\d.]+) "
             r"and \+([\d.]+) on the full map")
    gap = lambda r, key: round(r["attack"][key] - r["baseline_class_mean"][key], 3)  # noqa: E731
    assert [float(v) for v in m.groups()] == [gap(runs["hecnn"], "ssim_mean"), gap(runs["lenet5"], "ssim_mean"),
                                              gap(runs["hecnn"], "ssim_full_map_mean"), gap(runs["lenet5"], "ssim_full_map_mean")]
    for arch in ("hecnn", "lenet5"):
        check = json.loads((ROOT / "results" / f"mnist_{arch}" / "ssim_check.json").read_text())
        assert abs(check["difference"]) < 1e-6 and check["n"] == 10000


CKKS = json.loads((ROOT / "benchmarks" / "ckks.json").read_text())


def test_the_readme_quotes_the_ckks_benchmark_before_and_after():
    def stage(s):
        return (f"{s['seconds_per_fingerprint_mean']:.1f} s = client {s['client_encrypt_seconds_per_image']:.1f} "
                f"+ server setup {s['server_setup_seconds_per_image']:.1f} + {s['evaluations_per_fingerprint']:.2f} "
                f"evaluations × {s['server_eval_seconds_per_evaluation']:.2f}")

    after, before, split = CKKS["speed"], CKKS["speed_before"], CKKS["speed_split"]
    assert stage(before) + f" ({before['images']} images; max {before['seconds_per_fingerprint_max']:.1f})" in README
    assert "**" + stage(after).replace(" s = ", " s** = ", 1) + f" ({after['images']} images;" in README
    assert "**" + stage(split).replace(" s = ", " s** = ", 1) + f" ({split['images']} images;" in README
    assert split["processes"] == 2 and "split (`--ckks-processes 2`)" in README
    _one(rf"\| upload per image, batched \| {before['upload_bytes_per_image'] / 1e6:.1f} MB \| "
         rf"\*\*{after['upload_bytes_per_image'] / 1e6:.1f} MB\*\* \| {split['upload_bytes_per_image'] / 1e6:.1f} MB \|")
    helpers = CKKS["peak_rss_mb_split_helpers"]
    _one(rf"\| {CKKS['peak_rss_mb_before'] / 1e3:.2f} GB \| \*\*{CKKS['peak_rss_mb_after'] / 1e3:.2f} GB\*\* \| "
         rf"\*\*{CKKS['peak_rss_mb_split'] / 1e3:.2f} GB\*\*; helpers {helpers['server'][0] / 1e3:.2f} GB and "
         rf"{helpers['client'][0] / 1e3:.2f} GB \|")
    gain = lambda key: after[key] / split[key]  # noqa: E731
    _one(rf"client {gain('client_encrypt_seconds_per_image'):.2f}×, server setup {gain('server_setup_seconds_per_image'):.2f}×, "
         rf"evaluation {gain('server_eval_seconds_per_evaluation'):.2f}×, {CKKS['speedup_split_over_after']:.2f}× per fingerprint")
    agreement = CKKS["decision_agreement"]
    plural = "" if agreement["disagreements"] == 1 else "s"
    _one(rf"\*\*{100 * agreement['agreement']:.3f}%\*\* \({agreement['disagreements']} disagreement{plural}\)")
    eps = CKKS["eps_agreement"]
    by_image = sorted(eps["pairs_outside_tolerance_by_image"].items(), key=lambda kv: -kv[1])
    (worst, count), rest = by_image[0], by_image[1:]
    if rest:
        _one(rf"{count} of the {eps['pairs_outside_tolerance']} pairs outside rtol come from one image, test image {worst}, "
             + ", ".join(rf"{'one' if n == 1 else n} from image {i}" for i, n in rest))
    else:
        _one(rf"All {count} pairs outside rtol come from one image, test image {worst}")
    floors = CKKS["floors"]
    _one(rf"784 seeded encryptions × {1e3 * floors['seconds']['encrypt_seeded']:.1f} ms = "
         rf"{floors['batched']['client_encrypt_seconds_one_core']:.1f} s")
    _one(rf"3,072 rotations × {1e3 * floors['seconds']['rotation']:.1f} ms = "
         rf"{floors['compact']['rotation_seconds_per_image_one_core']:.1f} s per image")


def test_the_readme_quotes_the_ckks_pipelines_and_this_rounds_comparison():
    after, split, piped = CKKS["speed"], CKKS["speed_split"], CKKS["speed_pipelines"]
    assert piped["pipelines"] == 2 and piped["images"] == after["images"]
    _one(rf"They took\s+{piped['wall_seconds']:.1f} s of wall clock: \*\*{piped['seconds_per_fingerprint']:.1f} s per fingerprint\*\*, "
         rf"{CKKS['speedup_pipelines_over_after']:.2f}× the one-process path's")
    each = CKKS["peak_rss_mb_pipelines_each"]
    _one(rf"Peak memory {each[0] / 1e3:.2f} GB and {each[1] / 1e3:.2f} GB, {CKKS['peak_rss_mb_pipelines_sum'] / 1e3:.2f} GB together")
    # what the targets table claims: 10 s as one image's latency (split) and as a rate (pipelines); every process under 1.5 GB
    assert piped["seconds_per_fingerprint"] <= 10 and split["seconds_per_fingerprint_mean"] <= 10
    assert max(each) <= 1500 and CKKS["peak_rss_mb_after"] <= 1500 and CKKS["peak_rss_mb_split"] <= 1500
    _one(rf"\| ≤ 10 s per fingerprint \| \*\*{split['seconds_per_fingerprint_mean']:.1f} s\*\* for one image alone, split over 2 "
         rf"processes per party \(max {split['seconds_per_fingerprint_max']:.1f} s, .*?\); \*\*{piped['seconds_per_fingerprint']:.1f} s\*\* "
         rf"with each core on its own image \(the pipelines path\); {after['seconds_per_fingerprint_mean']:.1f} s in one process")
    helpers = CKKS["peak_rss_mb_split_helpers"]
    split_sum = CKKS["peak_rss_mb_split"] + helpers["server"][0] + helpers["client"][0]
    _one(rf"{split_sum / 1e3:.2f} GB for the\s+{split['seconds_per_fingerprint_mean']:.1f} s latency, "
         rf"{CKKS['peak_rss_mb_pipelines_sum'] / 1e3:.2f} GB for the {piped['seconds_per_fingerprint']:.1f} s rate")
    for name, key in (("ckks_eval_ab", "evaluation"), ("ckks_eval_ab_split", "evaluation")):
        ab = json.loads((ROOT / "benchmarks" / f"{name}.json").read_text())
        assert ab["baseline_commit"].startswith("544da90") and ab["current_commit"].startswith("59bc274")
        b, c = ab["baseline"][f"{key}_seconds_median"], ab["current"][f"{key}_seconds_median"]
        text = (f"| {b:.2f} s | {c:.2f} s | {ab[f'{key}_speedup']:.2f}× |" if ab["processes"] == 1
                else f"{b:.2f} → {c:.2f} s ({ab[f'{key}_speedup']:.2f}×) |")
        assert text in README


def test_the_readme_quotes_this_rounds_staging_comparison():
    one, split = (json.loads((ROOT / "benchmarks" / f"ckks_eval_ab_stage{x}.json").read_text()) for x in ("", "_split"))
    for ab in (one, split):
        assert ab["baseline_commit"].startswith("0517f61") and ab["current_commit"].startswith("ec27491")
        assert not ab["current_tree_dirty"] and ab["rounds"] == 5
    assert one["processes"] == 1 and split["processes"] == 2

    def change(ab, key):
        return re.escape(f"{ab['baseline'][f'{key}_seconds_median']:.2f} → {ab['current'][f'{key}_seconds_median']:.2f} s "
                         f"({ab[f'{key}_speedup']:.2f}×)")
    _one(rf"one evaluation {change(one, 'evaluation')} in one process and {change(split, 'evaluation')} split; the\s+"
         rf"setup {one['setup_speedup']:.2f}× and {split['setup_speedup']:.2f}×\. The client's encryption, whose code did not "
         rf"change, read {one['encrypt_speedup']:.2f}× and {split['encrypt_speedup']:.2f}×")


def test_the_readme_quotes_the_openfhe_bake_off():
    summary = json.loads((ROOT / "benchmarks" / "openfhe_primitives.json").read_text())["summary"]
    seal, small, big, big2 = (summary[k] for k in ("seal", "openfhe_hybrid_omp1", "openfhe_hybrid128_omp1", "openfhe_hybrid128_omp2"))

    def ms(v):
        return f"{1e3 * v:.1f}"

    _one(rf"\| one rotation \| {ms(seal['rotate_1_s'])} \| {ms(small['rotate_1_s'])} \| {ms(big['rotate_1_s'])} \| "
         rf"{ms(big2['rotate_1_s'])} \|")
    _one(rf"\| 12 rotations / 12 hoisted \| {1e3 * seal['rotate_12_plain_s']:.0f} / — \| {1e3 * small['rotate_12_plain_s']:.0f} / "
         rf"{1e3 * small['rotate_12_hoisted_s']:.0f} \| {1e3 * big['rotate_12_plain_s']:.0f} / {1e3 * big['rotate_12_hoisted_s']:.0f} \|")
    assert big["ring_dimension"] == 16384 and small["ring_dimension"] == seal["ring_dimension"] == 8192
    _one(rf"hoisted rotations take {big['rotate_12_hoisted_s'] / seal['rotate_12_plain_s']:.1f}× SEAL's time "
         rf"\({big2['rotate_12_hoisted_s'] / seal['rotate_12_plain_s']:.1f}× with both cores\)")


def test_the_readme_quotes_the_ckks_end_to_end_run():
    s = json.loads((ROOT / "results" / "mnist_hecnn_ckks" / "summary.json").read_text())
    for oracle, bold in (("plaintext", ""), ("ckks", "**")):
        m = s["metrics"][oracle]
        row = (f"{bold}{m['psnr_mean']:.2f} ± {m['psnr_std']:.2f}{bold} | {bold}{m['ssim_mean']:.4f} "
               f"({m['ssim_full_map_mean']:.4f}){bold} | {bold}{100 * m['class_recovery']:.0f}%{bold}")
        assert row in README, row
    evaluations = s["ckks_costs"]["evaluations"] / s["images"]
    _one(rf"\| {s['queries_per_fingerprint']['ckks']:,.0f} \({evaluations:.2f} evaluations\) \| "
         rf"{s['seconds_per_fingerprint']['ckks']:.1f} s \|")
    base = s["baseline_class_mean"]
    _one(rf"\| class-mean baseline \| {base['psnr_mean']:.2f} \| {base['ssim_mean']:.4f} \({base['ssim_full_map_mean']:.4f}\) \|")
    _one(rf"\({s['eps_agreement']['pairs_both_uncensored']:,}\s+pairs; max relative difference "
         rf"{100 * s['eps_agreement']['max_relative_difference']:.2f}%\)")
    c, n = s["ckks_costs"], s["images"]
    _one(rf"{s['seconds_per_fingerprint']['ckks']:.1f} s per image,\s+client encryption {c['client_encrypt_seconds'] / n:.1f} s "
         rf"\+ server setup {c['server_setup_seconds'] / n:.1f} s \+ {evaluations:.0f} evaluations × "
         rf"{c['server_eval_seconds'] / c['evaluations']:.1f} s")


def test_the_readme_quotes_the_compact_upload_benchmark():
    s = json.loads((ROOT / "benchmarks" / "ckks_compact_upload.json").read_text())
    assert s["key_pairs"] == 1
    _one(rf", {s['images']} images, one key pair, `strict`\): \*\*{s['upload_bytes_per_image_with_context'] / 1e6:.2f} MB per "
         rf"image\*\* with the context, at {s['seconds_per_image']:.1f} s per fingerprint")


def test_the_readme_quotes_the_ckks_memory_stages():
    s = json.loads((ROOT / "benchmarks" / "ckks_memory_stages.json").read_text())
    peaks = {k: f"{v / 1e3:.2f}" for k, v in s["peak_rss_mb_by_stage"].items()}
    _one(rf"\({s['images']} images, `benchmarks/ckks_memory_stages.json`\): {s['baseline_rss_mb'] / 1e3:.2f} GB before any "
         rf"CKKS work \(Python, torch, the model, the MNIST test split\); peaks {peaks['client_encrypt']} GB in the client's "
         rf"encryption, {peaks['server_setup']} GB in the server's setup, {peaks['server_evaluate']} GB in an evaluation, "
         rf"{peaks['between']} GB in between")
    _one(rf"the process sits {(s['peak_rss_mb_by_stage']['between'] - s['baseline_rss_mb']) / 1e3:.2f} GB above its baseline")


def test_the_readme_quotes_the_finished_frontier_cells():
    cells = json.loads((ROOT / "results" / "frontier" / "cells.json").read_text())
    cell = {(c["arch"], c["count"], f"{c['coarse_points']}:{c['rtol']:g}"): c for c in cells
            if c["dataset"] == "mnist" and c["decoder"]["ngf"] == 32 and c["decoder"]["epochs"] == 20}

    def quoted(c):
        return (f"{c['ssim']:.3f} ({c['ssim_full_map']:.3f}), {c['psnr']:.2f} dB, {100 * c['class_recovery']:.1f} %")

    for count, prec in ((25, "1:0.3"), (50, "1:0.3"), (50, "2:0.1"), (100, "1:0.3"), (100, "2:0.1"), (100, "8:0.01")):
        h, l = cell["hecnn", count, prec], cell["lenet5", count, prec]
        q = f"{h['queries_per_fingerprint']:,.0f}; {l['queries_per_fingerprint']:,.0f}"
        row = f"| {q} | {count}, {prec} | {quoted(h)} | {quoted(l)} |"
        assert row in README or row.replace("| ", "| **", 1) in README or (
            f"| **{q}** | **{count}, {prec}** | **{quoted(h)}** | **{quoted(l)}** |" in README), row
        assert h["ran_on"]["gpu"] == "NVIDIA H200" and h["n_train"] == 60000 and h["n_test"] == 10000
    base = cell["hecnn", 100, "1:0.3"]["baselines"]
    for name, key in (("class-mean", "baseline_class_mean"), ("mean-image", "baseline_mean_image")):
        b = base[key]
        _one(rf"\| 0 \| {name} baseline \| {b['ssim_mean']:.3f} \({b['ssim_full_map_mean']:.3f}\), {b['psnr_mean']:.2f} dB, "
             rf"{100 * b['class_recovery']:.1f} %")
    h100, h1283 = cell["hecnn", 100, "1:0.3"], cell["hecnn", 100, "8:0.01"]
    l100, l1269 = cell["lenet5", 100, "1:0.3"], cell["lenet5", 100, "8:0.01"]
    _one(rf"and adds {h1283['ssim'] - h100['ssim']:.3f} interior SSIM \(hecnn; lenet5\s+{l1269['ssim'] - l100['ssim']:.3f}\)")
    _one(rf"keeps {100 * h100['ssim'] / h1283['ssim']:.1f} % of the\s+1,283-query cell's interior SSIM")
    coarse = cell["hecnn", 140, "1:0.6"]
    _one(rf"CPU cores, {coarse['cell_seconds'] / 60:.0f} min\) searches 140 directions at 1:0.6, "
         rf"{coarse['queries_per_direction']:.2f} queries per direction where 1:0.3 takes\s+{h100['queries_per_direction']:.2f}: "
         rf"\*\*{coarse['queries_per_fingerprint']:.0f} queries, SSIM {coarse['ssim']:.3f} interior \({coarse['ssim_full_map']:.3f} "
         rf"full map\), {coarse['psnr']:.2f} dB, {100 * coarse['class_recovery']:.1f} %\*\*")
    assert coarse["ssim"] < h100["ssim"] and coarse["queries_per_fingerprint"] < h100["queries_per_fingerprint"]
    fashion = next(c for c in cells if c["dataset"] == "fashion-mnist" and c["count"] == 100 and c["rtol"] == 0.3)
    b = fashion["baselines"]["baseline_class_mean"]
    _one(rf"CPU, {fashion['cell_seconds'] / 60:.0f} min; hecnn `{fashion['hashes']['model']}`")
    _one(rf"\*\*{fashion['queries_per_fingerprint']:.0f} queries, SSIM {fashion['ssim']:.3f} interior "
         rf"\({fashion['ssim_full_map']:.3f} full map\), {fashion['psnr']:.2f} dB,\s+{100 * fashion['class_recovery']:.1f} % "
         rf"class recovery\*\*, against the class-mean baseline's {b['ssim_mean']:.3f} \({b['ssim_full_map_mean']:.3f}\), "
         rf"{b['psnr_mean']:.2f} dB")


def test_the_readme_quotes_the_prior_guided_frontier_cells():
    cells = json.loads((ROOT / "results" / "frontier" / "cells.json").read_text())
    prior = {(c["arch"], c["count"], int(c["rtol"])): c for c in cells if c.get("search") == "prior"}
    plain = {(c["arch"], c["count"], f"{c['coarse_points']}:{c['rtol']:g}"): c for c in cells
             if c.get("search", "bisection") == "bisection" and c["dataset"] == "mnist" and c["decoder"]["ngf"] == 32}
    h = prior["hecnn", 200, 2]
    assert h["queries_per_fingerprint"] == 400 and h["queries_per_direction"] == 2 and h["n_train"] == 60000
    _one(rf"\| hecnn `{h['hashes']['model']}` \| 400 \| 200 directions, prior:2 \| \*\*{h['ssim']:.3f} "
         rf"\({h['ssim_full_map']:.3f}\)\*\* \| {h['psnr']:.2f} dB \| \*\*{100 * h['class_recovery']:.1f} %\*\* \|")
    for count, prec in ((100, "1:0.3"), (100, "8:0.01")):
        c = plain["hecnn", count, prec]
        _one(rf"\| hecnn \| {c['queries_per_fingerprint']:,.0f} \| 100 directions, {prec} \| {c['ssim']:.3f} "
             rf"\({c['ssim_full_map']:.3f}\) \| {c['psnr']:.2f} dB \| {100 * c['class_recovery']:.1f} % \|")
    base = plain["hecnn", 100, "1:0.3"]
    _one(rf"adds\s+{h['ssim'] - base['ssim']:.3f} interior SSIM and {100 * (h['class_recovery'] - base['class_recovery']):.1f} "
         rf"points of class recovery")
    _one(rf"`censored_fraction` {h['censored_fraction']:.3f}")
    coarse = next(c for c in cells if c["count"] == 140 and c["arch"] == "hecnn")
    _one(rf"flips for {100 * (1 - coarse['censored_fraction']):.0f} % of hecnn's pairs \(the `coarse` cell's censored fraction is\s+"
         rf"{coarse['censored_fraction']:.3f}\)")
    _one(rf"this machine's 2 CPU cores, {h['cell_seconds'] / 60:.0f} min")


def test_the_readme_quotes_the_rank_and_ssim_l1_prior_cell():
    cells = json.loads((ROOT / "results" / "frontier" / "cells.json").read_text())
    prior = [c for c in cells if c.get("search") == "prior" and c["arch"] == "hecnn" and c["dataset"] == "mnist"
             and c["family"] == "random"]
    both = next(c for c in prior if c["decoder"].get("loss") == "ssim-l1" and c["decoder"].get("features") == "rank")
    base = next(c for c in prior if c["decoder"].get("loss", "mse") == "mse" and c["decoder"].get("features", "log") == "log")
    fine = next(c for c in cells if c["arch"] == "hecnn" and c["count"] == 100 and c.get("search", "bisection") == "bisection"
                and c["rtol"] == 0.01 and c["dataset"] == "mnist")
    assert both["queries_per_fingerprint"] == 400 and both["n_train"] == 60000 and both["n_test"] == 10000
    assert both["hashes"]["directions"] == base["hashes"]["directions"]
    _one(rf"\| hecnn, rank features \+ ssim-l1 loss \| 400 \| 200 directions, prior:2 \| \*\*{both['ssim']:.3f} "
         rf"\({both['ssim_full_map']:.3f}\)\*\* \| {both['psnr']:.2f} dB \| {100 * both['class_recovery']:.1f} % \|")
    _one(rf"DEVICE=cpu bash results/frontier/run.sh`, {both['cell_seconds'] / 60:.0f} min beside\s+other jobs\) add "
         rf"{both['ssim'] - base['ssim']:.3f} interior SSIM on the same fingerprints: \*\*{both['ssim']:.3f} at 400 queries\*\*, "
         rf"the best\s+full-scale cell of random directions, {both['ssim'] - fine['ssim']:.3f} above the 1,283-query cell; class recovery "
         rf"stays at {100 * both['class_recovery']:.1f} %")


def test_the_readme_quotes_the_full_scale_learned_points():
    cells = json.loads((ROOT / "results" / "frontier" / "cells.json").read_text())
    learned = next(c for c in cells if c["family"] == "learned" and c["arch"] == "hecnn" and c["dataset"] == "mnist")
    random = [c for c in cells if c["family"] == "random" and c["arch"] == "hecnn" and c["dataset"] == "mnist"]
    prior = next(c for c in random if c.get("search") == "prior" and c["count"] == 200
                 and c["decoder"].get("loss", "mse") == "mse" and c["decoder"].get("features", "log") == "log")
    best = next(c for c in random if c.get("search") == "prior" and c["decoder"].get("loss") == "ssim-l1")
    fine = next(c for c in random if c.get("search", "bisection") == "bisection" and c["count"] == 100 and c["rtol"] == 0.01)
    assert learned["queries_per_fingerprint"] == learned["count"] == 400 and learned["queries_per_direction"] == 1
    assert (learned["n_train"], learned["n_test"]) == (60000, 10000) and learned["hashes"]["model"] == prior["hashes"]["model"]
    assert learned["decoder"]["loss"] == "mse" and learned["decoder"]["features"] == "log" and learned["decoder"]["epochs"] == 20
    _one(rf"\| 400 learned points, one query each \| \*\*{learned['ssim']:.3f} \({learned['ssim_full_map']:.3f}\)\*\* \| "
         rf"{learned['psnr']:.2f} dB \| \*\*{100 * learned['class_recovery']:.1f} %\*\* \|")
    _one(rf"add {learned['ssim'] - prior['ssim']:.3f} interior SSIM to the same decoder on 200 random directions at\s+"
         rf"prior:2 \(the same 400 queries\) and to the 1,283-query cell, and {learned['ssim'] - best['ssim']:.3f} to the best")
    assert f"{learned['ssim'] - fine['ssim']:.3f}" == f"{learned['ssim'] - prior['ssim']:.3f}"
    _one(rf"class recovery hardly moves \({100 * learned['class_recovery']:.2f} %\s+against prior:2's "
         rf"{100 * prior['class_recovery']:.2f} %\)")
    _one(rf"best epoch was {learned['decoder']['best_epoch']} of the {learned['decoder']['epochs_run']} it ran")
    _one(rf"{100 * (1 - learned['censored_fraction']):.1f} % of the\s+victims' pairs flip at their point \(the cell's "
         rf"`censored_fraction` is {learned['censored_fraction']:.3f}\)")
    _one(rf"the owner's learned query points below, {learned['ssim']:.3f}\s+and {100 * learned['class_recovery']:.1f} %")
    _one(rf"{learned['cell_seconds']:.0f} s of decoder and scoring")


def test_the_readme_quotes_the_lenet5_learned_points():
    cells = json.loads((ROOT / "results" / "frontier" / "cells.json").read_text())
    lenet5 = [c for c in cells if c["arch"] == "lenet5" and c["dataset"] == "mnist"]
    learned = next(c for c in lenet5 if c["family"] == "learned")
    prior = next(c for c in lenet5 if c["family"] == "random" and c.get("search") == "prior")
    fine = next(c for c in lenet5 if c.get("search", "bisection") == "bisection" and c["count"] == 100 and c["rtol"] == 0.01)
    assert learned["learn"] == {"epochs": 2, "balance": 0.1, "images": 20000}
    assert learned["queries_per_fingerprint"] == learned["count"] == 400 and learned["queries_per_direction"] == 1
    assert (learned["n_train"], learned["n_test"]) == (60000, 10000) and learned["hashes"]["model"] == fine["hashes"]["model"]
    assert learned["decoder"] == {**learned["decoder"], "loss": "mse", "features": "log", "epochs": 20, "ngf": 32}

    def row(c):
        return (f"{c['ssim']:.3f} ({c['ssim_full_map']:.3f})", f"{c['psnr']:.2f} dB", f"{100 * c['class_recovery']:.1f} %")

    s, p, c = row(learned)
    assert f"| 400 learned points, one query each | 400 | **{s}** | {p} | **{c}** |" in README
    s, p, c = row(prior)
    assert f"| 200 random directions, prior:2 | 400 | {s} | {p} | {c} |" in README
    s, p, c = row(fine)
    assert f"| 100 random directions, 8:0.01 | {fine['queries_per_fingerprint']:,.0f} | {s} | {p} | {c} |" in README
    _one(rf"At 400 queries lenet5 now beats its 1,269-query cell by {learned['ssim'] - fine['ssim']:.3f} interior SSIM, "
         rf"{learned['psnr'] - fine['psnr']:.2f} dB and {100 * (learned['class_recovery'] - fine['class_recovery']):.1f} points")
    _one(rf"standard error of the cell's mean SSIM is {learned['ssim_std'] / 100:.4f}")
    _one(rf"{100 * (1 - learned['censored_fraction']):.1f} % of the victims' pairs flip")
    _one(rf"(?s){learned['directions_build_seconds']:.0f} s of learning, .*? {learned['cell_seconds']:.0f} s of decoder and scoring; "
         rf"lenet5 `{learned['hashes']['model']}`")
    _one(rf"best epoch was {learned['decoder']['best_epoch']} of the {learned['decoder']['epochs_run']} it ran\.")
    _one(rf"lenet5's learned points give {learned['ssim']:.3f} and {100 * learned['class_recovery']:.1f} %, above its")


def test_the_readme_quotes_the_fashion_learned_points():
    cells = json.loads((ROOT / "results" / "frontier" / "cells.json").read_text())
    fashion = [c for c in cells if c["dataset"] == "fashion-mnist" and c["arch"] == "hecnn"]
    learned = next(c for c in fashion if c["family"] == "learned")
    prior = next(c for c in fashion if c["family"] == "random" and c.get("search") == "prior")
    assert learned["queries_per_fingerprint"] == prior["queries_per_fingerprint"] == 400
    assert (learned["n_train"], learned["n_test"]) == (60000, 10000) and learned["decoder"] == {**learned["decoder"], "loss": "mse"}
    _one(rf"\*\*400 queries,\s+{learned['ssim']:.3f} interior SSIM \({learned['ssim_full_map']:.3f} full map\), "
         rf"{learned['psnr']:.2f} dB, {100 * learned['class_recovery']:.1f} % class\s+recovery\*\*, against {prior['ssim']:.3f} "
         rf"\({prior['ssim_full_map']:.3f}\), {prior['psnr']:.2f} dB, {100 * prior['class_recovery']:.1f} % for 200 random")
    _one(re.escape(f"({learned['ssim'] - prior['ssim']:+.3f} interior SSIM)") + r"\. On Fashion-MNIST")
    _one(rf"best epoch was {learned['decoder']['best_epoch']} of the {learned['decoder']['epochs_run']} it ran; "
         rf"{100 * (1 - learned['censored_fraction']):.1f} % of the victims' pairs")


def test_the_readme_quotes_the_lenet5_and_fashion_prior_cells():
    cells = json.loads((ROOT / "results" / "frontier" / "cells.json").read_text())
    prior = {(c["dataset"], c["arch"]): c for c in cells if c.get("search") == "prior" and c["count"] == 200
             and c["decoder"].get("loss", "mse") == "mse" and c["decoder"].get("features", "log") == "log"
             and not c["decoder"].get("mlp", 0)}
    plain = {(c["dataset"], c["arch"], f"{c['coarse_points']}:{c['rtol']:g}"): c for c in cells
             if c.get("search", "bisection") == "bisection" and c["count"] == 100 and c["decoder"]["ngf"] == 32}

    def row(c):
        return rf"{c['ssim']:.3f} \({c['ssim_full_map']:.3f}\)\*?\*? \| {c['psnr']:.2f} dB \| \*?\*?{100 * c['class_recovery']:.1f} %"

    lp, ff = prior["mnist", "lenet5"], prior["fashion-mnist", "hecnn"]
    assert lp["queries_per_fingerprint"] == ff["queries_per_fingerprint"] == 400 and lp["n_train"] == ff["n_train"] == 60000
    _one(rf"\| lenet5 `{lp['hashes']['model']}` \| 400 \| 200 directions, prior:2 \| \*\*" + row(lp))
    _one(rf"\| Fashion-MNIST hecnn `{ff['hashes']['model']}` \| 400 \| 200 directions, prior:2 \| \*\*" + row(ff))
    for key, label in ((("mnist", "lenet5", "1:0.3"), "lenet5"), (("mnist", "lenet5", "8:0.01"), "lenet5"),
                       (("fashion-mnist", "hecnn", "1:0.3"), "Fashion-MNIST hecnn")):
        c = plain[key]
        _one(rf"\| {label} \| {c['queries_per_fingerprint']:,.0f} \| 100 directions, {key[2]} \| " + row(c))
    l1269, f468 = plain["mnist", "lenet5", "8:0.01"], plain["fashion-mnist", "hecnn", "1:0.3"]
    _one(rf"resume here took {lp['cell_seconds'] / 60:.0f} min beside other jobs\) at 400 queries is "
         rf"{l1269['ssim'] - lp['ssim']:.3f} interior SSIM and {l1269['psnr'] - lp['psnr']:.2f} dB below its\s+1,269-query cell "
         rf"and {100 * (lp['class_recovery'] - l1269['class_recovery']):.1f} points above it")
    _one(rf"standard deviation is {lp['ssim_std']:.3f}, so a standard error of {lp['ssim_std'] / 100:.3f} over 10,000 victims")
    _one(rf"DEVICE=cpu bash results/frontier/run.sh`, {ff['cell_seconds'] / 60:.0f} min beside other jobs\) gains\s+"
         rf"{ff['ssim'] - f468['ssim']:.3f} interior SSIM and {100 * (ff['class_recovery'] - f468['class_recovery']):.1f} points "
         rf"of class recovery with {f468['queries_per_fingerprint'] - 400:.0f} fewer queries")


def test_the_readme_quotes_the_decoder_screening():
    screen = json.loads((ROOT / "results" / "frontier" / "screen.json").read_text())
    rank, log = screen["prior2-k200/rank/mse"], screen["prior2-k200/log/mse"]
    assert rank["queries_per_fingerprint"] == log["queries_per_fingerprint"] == 400 and rank["n_train"] == 20000
    _one(rf"\*\*{rank['ssim']:.3f} against {log['ssim']:.3f}\*\* interior SSIM \({rank['ssim_full_map']:.3f} against "
         rf"{log['ssim_full_map']:.3f}\s+full map, {100 * rank['class_recovery']:.1f} % against {100 * log['class_recovery']:.1f} % "
         rf"class recovery\)")
    mlp = screen["prior2-k200/log/mse/mlp2"]
    assert mlp["mlp"] == 2 and mlp["queries_per_fingerprint"] == 400 and mlp["epochs"] == log["epochs"]
    _one(rf"gives \*\*{mlp['ssim']:.3f} against {log['ssim']:.3f}\*\* interior SSIM but {mlp['ssim_full_map']:.3f} against "
         rf"{log['ssim_full_map']:.3f} full map and {100 * mlp['class_recovery']:.1f} % against\s+{100 * log['class_recovery']:.1f} % "
         rf"class recovery")
    res = screen["prior2-k200/rank/mse/res2"]
    assert res["res"] == 2 and res["queries_per_fingerprint"] == 400 and res["epochs"] == rank["epochs"]
    assert res["hashes"] == rank["hashes"] and res["n_train"] == rank["n_train"] and res["n_test"] == rank["n_test"]
    _one(rf"give \*\*{res['ssim']:.3f} against\s+{rank['ssim']:.3f}\*\* interior SSIM, \*\*{res['ssim_full_map']:.3f} against "
         rf"{rank['ssim_full_map']:.3f}\*\* full map, {res['psnr']:.2f} against {rank['psnr']:.2f} dB and "
         rf"{100 * res['class_recovery']:.1f} % against\s+{100 * rank['class_recovery']:.1f} % class recovery")
    from hesig.models.dcgan import DCGANDecoder
    params = [sum(p.numel() for p in DCGANDecoder(400, (1, 28, 28), 32, res=r).parameters()) for r in (0, 2)]
    _one(rf"{100 * (params[1] / params[0] - 1):.1f} % more parameters")
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    macs = []
    for r in (0, 2):
        with FlopCounterMode(display=False) as counter:
            DCGANDecoder(400, (1, 28, 28), 32, res=r).eval()(torch.zeros(1, 400))
        macs.append(counter.get_total_flops() / 2e6)   # a multiply-add is two flops
    _one(rf"{macs[1] / macs[0]:.1f}\s+times the multiply-adds per image: {macs[1]:.1f} M against {macs[0]:.1f} M")
    ens = screen["prior2-k200/rank/mse/ens3"]
    members = ens["members"]
    assert ens["ensemble"] == 3 and [m["seed"] for m in members] == [0, 1, 2] and ens["hashes"] == rank["hashes"]
    assert {k: members[0][k] for k in ("ssim", "ssim_full_map", "psnr", "class_recovery")} == \
        {k: rank[k] for k in ("ssim", "ssim_full_map", "psnr", "class_recovery")}   # seed 0 reproduces the entry

    def spread(key, digits=3, scale=1):
        values = [scale * m[key] for m in members]
        return f"{min(values):.{digits}f}–{max(values):.{digits}f}", max(values) - min(values)

    (ssim_range, ssim_spread), (full_range, full_spread) = spread("ssim"), spread("ssim_full_map")
    _one(rf"gives \*\*{ens['ssim']:.3f}\*\* interior SSIM \({ens['ssim_full_map']:.3f} full map\), {ens['psnr']:.2f} dB, "
         rf"{100 * ens['class_recovery']:.1f} % class\s+recovery, against its members' {ssim_range} \({full_range} full map\), "
         rf"{spread('psnr', 2)[0]} dB: {ens['ssim'] - sum(m['ssim'] for m in members) / 3:.3f} interior SSIM")
    _one(rf"{ssim_spread:.3f} interior SSIM but {full_spread:.3f} full map")
    ceiling = json.loads((ROOT / "results" / "frontier" / "ceiling.json").read_text())["400"]
    assert ceiling["n_train"] == log["n_train"] and ceiling["n_test"] == log["n_test"] and ceiling["epochs"] == log["epochs"]
    _one(rf"\*\*{ceiling['ssim']:.3f} interior SSIM \({ceiling['ssim_full_map']:.3f} full map\), {ceiling['psnr']:.2f} dB, "
         rf"{100 * ceiling['class_recovery']:.1f} % class recovery\*\*")
    ssim = {k: f"{v['ssim']:.3f}" for k, v in screen.items()}
    _one(rf"100 directions at 1:0.3 \*\*{ssim['g1r0.3-k100/log/mse']}\*\*; prior-guided, 400 directions × 1\s+"
         rf"query \*\*{ssim['prior1-k400/log/mse']}\*\*, 200 × 2 \*\*{ssim['prior2-k200/log/mse']}\*\*, 100 × 4 "
         rf"\*\*{ssim['prior4-k100/log/mse']}\*\*")


def test_the_readme_quotes_the_learned_query_points():
    learned = json.loads((ROOT / "results" / "frontier" / "learned.json").read_text())
    screen = json.loads((ROOT / "results" / "frontier" / "screen.json").read_text())
    free, balanced, random = learned["k400-e2"], learned["k400-e2-b0.1"], screen["prior1-k400/log/mse"]
    for entry in (free, balanced):
        assert entry["queries_per_fingerprint"] == 400 and entry["n_train"] == random["n_train"]
        assert entry["decoder_epochs"] == random["epochs"] and entry["n_test"] == random["n_test"]
    _one(rf"the victims' flip rate\s+{free['flip_rate_victims']:.3f}\), and the result, \*\*{free['ssim']:.3f}\*\* interior")
    _one(rf"\(BALANCE {balanced['balance']:g}; flip rate {balanced['flip_rate_victims']:.3f}\), "
         rf"{balanced['learn_epochs']} epochs give \*\*{balanced['ssim']:.3f} interior\s+SSIM \({balanced['ssim_full_map']:.3f} full map\), "
         rf"{balanced['psnr']:.2f} dB, {100 * balanced['class_recovery']:.1f} % class recovery at 400 queries\*\*, against "
         rf"{random['ssim']:.3f} \({random['ssim_full_map']:.3f}\),\s+{random['psnr']:.2f} dB, {100 * random['class_recovery']:.1f} %")
    longer = learned["k400-e8-b0.1-cuda"]
    assert longer["ran_on"] == {"device": "cuda", "gpu": "NVIDIA H200", "torch": "2.11.0+cu130"}
    assert (longer["n_train"], longer["n_test"], longer["balance"]) == (balanced["n_train"], balanced["n_test"], 0.1)
    history = [h["train_mse"] for h in longer["history"][1:]]
    assert len(history) == 8 and history == sorted(history, reverse=True)
    _one(rf"{longer['learn_seconds']} s of learning beside up to 13 other processes")
    _one(rf"give \*\*{longer['ssim']:.3f} interior SSIM \({longer['ssim_full_map']:.3f} full map\), {longer['psnr']:.2f} dB, "
         rf"{100 * longer['class_recovery']:.1f} % class recovery\*\*, flip rate\s+{longer['flip_rate_victims']:.3f}")
    _one(rf"\({history[0]:.4f} after epoch 1, {history[-1]:.4f} after epoch\s+8\)")


def test_the_readme_quotes_the_key_recovery_signature_row():
    s = json.loads((ROOT / "results" / "key_recovery" / "results.json").read_text())["signature"]["strict"]
    _one(rf"reaches SSIM {s['ssim']:.3f} / class recovery {s['class_recovery']:.3f} on MNIST\s+against the class-mean "
         rf"baseline's {s['baseline_class_mean_ssim']:.3f} \(interior SSIM; on the full map {s['ssim_full_map']:.3f} against "
         rf"{s['baseline_class_mean_ssim_full_map']:.3f}")
    assert "signature SSIM, interior (full map)" in (ROOT / "results" / "key_recovery" / "TABLE.md").read_text()


def test_the_readme_quotes_the_50_epoch_vicious_cells():
    cells = json.loads((ROOT / "results" / "vicious" / "paper_epochs.json").read_text())["cells"]
    names = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
    for c in cells.values():
        p = c["paper"]
        assert c["epochs"] == 50 and c["seeds"] == [0]
        recon = ("" if c["beta"] == "0/1" else  # an honest model has no decoder to score
                 f"PSNR {c['psnr_dataset_mean']:.2f} dB ({p['psnr']:g}), SSIM {c['ssim_mean']:.3f} ({p['ssim']:g}), "
                 f"R {c['R_mean']:.3f} ({p['R']:g}), ")
        assert (f"- {names[c['dataset']]} {c['release']} {c['beta']}: accuracy {100 * c['acc_mean']:.2f} % ({p['acc']:g}), "
                f"{recon}best epoch {c['best_epoch'][0]}, target met: {c['meets_target']}\n") in README
    headline = {"mnist/logits/1/1", "mnist/logits/3/1", "mnist/softmax/5/1", "fashion-mnist/logits/3/1"}
    assert headline <= set(cells), "the four headline cells of the fidelity issue"
    cpu = json.loads((ROOT / "results" / "vicious" / "paper_epochs_cpu.json").read_text())["cells"]
    for key, c in cpu.items():
        assert c["device"] == "cpu" and c["epochs"] == 50
        assert f"{100 * c['acc_mean']:.2f} %,\n{c['psnr_dataset_mean']:.2f} dB, SSIM {c['ssim_mean']:.3f}" in README or \
            f"{100 * c['acc_mean']:.2f} %, {c['psnr_dataset_mean']:.2f} dB, SSIM {c['ssim_mean']:.3f}" in README, key


def test_the_readme_quotes_the_relu2_own_range_recheck():
    s = json.loads((ROOT / "results" / "collab_inference" / "recheck_relu2_own_range.json").read_text())
    same, other = s["same"], s["disjoint"]
    assert same["n"] == other["n"] == 1000 and same["model_hash"] == other["model_hash"]
    assert same["ssim_own_range_mean"] > same["paper_ssim"] and other["ssim_own_range_mean"] > other["paper_ssim"]
    _one(rf"hash {same['model_hash']}\)\. Shadow on the same half:\s+\*\*{same['psnr_mean']:.2f} dB\*\*, SSIM "
         rf"{same['ssim_interior_mean']:.3f} interior, {same['ssim_full_map_mean']:.3f} full map, \*\*{same['ssim_own_range_mean']:.3f} "
         rf"in He et al.'s own convention\*\*")
    _one(rf"Shadow on the other half: \*\*{other['psnr_mean']:.2f} dB\*\*, {other['ssim_interior_mean']:.3f} interior, "
         rf"{other['ssim_full_map_mean']:.3f} full map,\s+\*\*{other['ssim_own_range_mean']:.3f} own convention\*\*")


def test_the_readme_quotes_the_detection_on_the_50_epoch_models():
    auc = {ds: json.loads((ROOT / "results" / "vicious" / f"paper_epochs_detection_{ds}.json").read_text())["roc"][ds]["auc"]
           for ds in ("mnist", "fashion-mnist")}
    _one(rf"so the AUC is {auc['mnist']:.3f} on MNIST and {auc['fashion-mnist']:.3f} on Fashion-MNIST")
    table = (ROOT / "results" / "vicious" / "PAPER_EPOCHS.md").read_text()
    assert f"| MNIST | mnist | {auc['mnist']:.3f} |" in table and f"| FMNIST | fashion-mnist | {auc['fashion-mnist']:.3f} |" in table


def test_the_readme_quotes_the_gpu_search_benchmark():
    b = json.loads((ROOT / "benchmarks" / "search_cuda.json").read_text())
    assert b["device"] == "cuda" and b["gpu"] == "NVIDIA H200" and b["engine_to_raw"] >= b["engine_target"]
    _one(rf"NVIDIA H200, torch {re.escape(b['torch'])}, lenet5 `{b['model_hash']}`")
    _one(rf"raw batched forward {b['raw_forward_qps'] / 1e6:.2f}M images/s at batch {b['batch_size']:,}")
    _one(rf"\*\*{b['engine_qps'] / 1e6:.2f}M queries/s, {b['engine_to_raw']:.3f} of raw\*\*")
    _one(rf"{b['job_qps'] / 1e6:.2f}M queries/s, {b['job_to_raw']:.2f} of raw")
    agree = b["gpu_vs_cpu_agreement"]
    _one(rf"GPU and CPU agree on {100 * agree['identical_eps']:.1f} % of ε\s+bit for bit, "
         rf"{100 * agree['identical_censoring']:.3f} % of censoring and {100 * agree['identical_queries']:.3f} % of query counts")


def test_the_readme_quotes_the_collab_main_cells_in_every_convention():
    t = json.loads((ROOT / "results" / "collab_inference" / "table_conventions.json").read_text())
    cells = t["cells"]
    assert len(cells) == 16 and t["targets"] == ["1539437c30ea36f7"]
    assert all(c["meets_target"] for c in cells.values()) and "**all 16 cells meet the target**" in README
    for key in ("shadow_same_same@ReLU2", "shadow_disjoint_same@ReLU2", "shadow_same_different@ReLU2",
                "shadow_disjoint_different@ReLU2", "inverse_train@conv1", "inverse_disjoint@conv1",
                "shadow_same_same@conv1", "shadow_disjoint_same@conv1"):
        c = cells[key]
        assert re.search(rf"{c['psnr']:.2f}( dB)? / {c['ssim_interior']:.3f}\s+\({c['ssim_full_map']:.3f}\)", README), key
        assert f"{c['paper_psnr']:.2f} / {c['paper_ssim']:.3f}" in README, key
    recheck = json.loads((ROOT / "results" / "collab_inference" / "recheck_relu2_own_range.json").read_text())
    assert round(recheck["same"]["psnr_mean"], 2) == round(cells["shadow_same_same@ReLU2"]["psnr"], 2)
    assert round(recheck["disjoint"]["psnr_mean"], 2) == round(cells["shadow_disjoint_same@ReLU2"]["psnr"], 2)


def test_the_readme_quotes_the_cifar10_columns():
    t = json.loads((ROOT / "results" / "collab_inference" / "table_cifar10.json").read_text())
    cells = t["cells"]
    assert len(cells) == 24 and t["targets"] == ["a9515025f1bd3f86"]
    assert all(c["dataset"] == "cifar10" and c["arch"] == "cifar_cnn" and c["device"] == "cuda" for c in cells.values())
    met = sum(c["meets_target"] for c in cells.values())
    assert f"**{met} of the 24 cells meet the target**" in README and f"**{met} of 24 cells meet the target.**" in \
        (ROOT / "results" / "collab_inference" / "TABLE_CIFAR10.md").read_text()
    _one(rf"test accuracy\s+{100 * cells['rmle@conv11']['target_test_accuracy']:.2f} %, hash {t['targets'][0]}")
    for key in ("rmle@ReLU22", "rmle@ReLU32", "inverse_train@ReLU22", "inverse_gaussian@ReLU22", "shadow_disjoint_same@conv11",
                "shadow_same_same@conv11", "shadow_same_different@conv11", "shadow_disjoint_different@conv11",
                "shadow_same_different@ReLU22"):
        c = cells[key]
        assert re.search(rf"{c['psnr']:.2f} /\s+{c['ssim_interior']:.3f}", README), key
        assert re.search(rf"{c['paper_psnr']:.2f} /\s+{c['paper_ssim']:.3f}", README), key
    conv11 = [cells[f"inverse_{q}@conv11"] for q in ("train", "disjoint", "gaussian")]
    assert all(not c["meets_target"] and c["ssim_interior"] >= c["paper_ssim"] - 0.02 for c in conv11)
    _one(r"reach " + r",\s+".join(f"{c['psnr']:.2f}" for c in conv11[:2]) + rf" and {conv11[2]['psnr']:.2f} dB against the paper's "
         + ", ".join(f"{c['paper_psnr']:.2f}" for c in conv11[:2]) + rf" and {conv11[2]['paper_psnr']:.2f}")


def test_the_readme_quotes_the_gpu_search_benchmark_without_tf32():
    b = json.loads((ROOT / "benchmarks" / "search_cuda_fp32.json").read_text())
    on = json.loads((ROOT / "benchmarks" / "search_cuda.json").read_text())
    assert b["cudnn_allow_tf32"] is False and b["gpu"] == on["gpu"] == "NVIDIA H200" and b["torch"] == on["torch"]
    agree = b["gpu_vs_cpu_agreement"]
    _one(rf"\*\*{100 * agree['identical_eps']:.2f} % of ε bit for bit\*\* \(from {100 * on['gpu_vs_cpu_agreement']['identical_eps']:.1f} %\), "
         rf"{100 * agree['identical_censoring']:.0f} % of censoring and {100 * agree['identical_queries']:.0f} %\s+of query counts")
    _one(rf"raw forward {b['raw_forward_qps'] / 1e6:.2f}M\s+images/s and the engine {b['engine_qps'] / 1e6:.2f}M queries/s "
         rf"\(\*\*{b['engine_to_raw']:.3f} of raw\*\*; the fingerprint job {b['job_to_raw']:.3f}\)")
    _one(rf"{on['raw_forward_qps'] / 1e6:.2f}M / {on['engine_qps'] / 1e6:.2f}M with TF32 on")


def test_the_readme_quotes_the_split_study_and_the_noise_defense():
    cells = json.loads((ROOT / "results" / "collab_inference" / "cells.json").read_text())
    sp, de = cells["splits"], cells["defenses"]
    assert len(sp) == 33 and len(de) == 16
    assert {c["model_hash"] for part in cells.values() for c in part.values()} == {"1539437c30ea36f7"}

    def cell(c):
        return rf"{c['psnr']:.2f}( dB)? /\s+{c['ssim']:.3f}\s+\({c['ssim_full_map']:.3f}\)"
    for key in ("rmle@conv1", "rmle@ReLU2", "rmle@fc1"):
        assert re.search(cell(sp[key]), README), key
    for key in ("shadow@conv1", "shadow@conv2", "shadow@ReLU2"):
        c = sp[key]
        assert re.search(rf"{c['ssim']:.3f}\s+\({c['ssim_full_map']:.3f}\) at {key.split('@')[1]}", README), key
    deep = ("fc1", "fc1act", "fc2", "fc2act", "fc3")
    _one(rf"at most {max(sp[f'shadow@{x}']['ssim'] for x in deep):.3f} \({max(sp[f'shadow@{x}']['ssim_full_map'] for x in deep):.3f}\)")
    _one(rf"at most {max(sp[f'rmle@{x}']['psnr'] for x in ('fc2', 'fc2act', 'fc3')):.2f} dB from fc2 on")
    weakest = min((c for k, c in sp.items() if k.startswith("inverse@")), key=lambda c: c["ssim"])
    assert weakest is sp["inverse@fc3"]
    _one(rf"SSIM ≥ {weakest['ssim']:.3f} at every split \({weakest['ssim']:.3f} \({weakest['ssim_full_map']:.3f}\) at\s+fc3\)")
    r, q = de["rmle@conv1@0.3"], de["inverse@conv1@0.3"]
    _one(rf"σ 0.3 keeps {100 * r['defended_accuracy']:.2f} % accuracy \({100 * sp['rmle@conv1']['defended_accuracy']:.2f} % without noise\) "
         rf"and leaves rMLE\s+{r['psnr']:.2f} dB / {r['ssim']:.3f} \({r['ssim_full_map']:.3f}\)")
    r1 = de["rmle@conv1@1"]
    _one(rf"halves the accuracy \({100 * r1['defended_accuracy']:.2f} %\), still leaves {r1['ssim']:.3f}\s+\({r1['ssim_full_map']:.3f}\)")
    _one(rf"σ 0.3 {q['ssim']:.3f} \({q['ssim_full_map']:.3f}\)")
    i1 = de["inverse@ReLU2@1"]
    _one(rf"σ 1 costs {100 * (sp['rmle@conv1']['defended_accuracy'] - i1['defended_accuracy']):.1f} points of accuracy "
         rf"\({100 * i1['defended_accuracy']:.2f} %\) while it keeps {i1['ssim']:.3f}\s+\({i1['ssim_full_map']:.3f}\)")


def test_the_readme_quotes_the_direction_study_in_both_conventions():
    cells = json.loads((ROOT / "results" / "directions_study" / "cells.json").read_text())
    answer = json.loads((ROOT / "results" / "directions_study" / "answer.json").read_text())
    paper = [c for c in cells if (c["coarse_points"], c["rtol"]) == (8, 0.01) and c["count"] == 100]
    assert len(paper) == 28 and all(c["ssim_full_map"] is not None for c in cells)
    for c in paper:
        assert re.search(rf"{c['ssim']:.3f}(\*\*)? \({c['ssim_full_map']:.3f}\) / {c['queries_per_fingerprint']:.0f}", README), c["family"]
    a = answer["answers_ssim"]["mnist/hecnn"]
    cheapest = a["cheapest_within_one_standard_error"]
    _one(rf"{cheapest['ssim']:.3f} for \*\*{cheapest['queries_per_fingerprint']:.0f} queries\*\*")
    assert "is the **full-map** value" not in README  # the section's old convention note is gone


def test_the_readme_quotes_the_adaptive_query_points():
    adaptive = json.loads((ROOT / "results" / "frontier" / "adaptive.json").read_text())
    bits = json.loads((ROOT / "results" / "frontier" / "bits.json").read_text())["learned-mnist-hecnn-k400-e2/learned-k400"]
    single = json.loads((ROOT / "results" / "frontier" / "learned.json").read_text())["k400-e2-b0.1"]
    cells = json.loads((ROOT / "results" / "frontier" / "cells.json").read_text())
    one_set = next(c for c in cells if c["family"] == "learned" and c["arch"] == "hecnn" and c["dataset"] == "mnist")
    full = adaptive["a100-b300-e2-bal0.1-reknot-n60000-d20"]
    screen = {mode: adaptive["a100-b300-e2-bal0.1" + ("" if mode == "learned" else f"-{mode}")]
              for mode in ("reknot", "shared", "learned")}
    assert bits["hashes"]["directions"] == one_set["hashes"]["directions"] and bits["images"] == 60000
    constant = bits["near_constant_share_by_label"].values()
    _one(rf"its 400 bits carry {bits['entropy_bits_marginal']:.0f} bits of marginal entropy but "
         rf"{bits['entropy_bits_within_target_label']:.0f} within the\s+target's label, and\s+"
         rf"{100 * min(constant):.0f}–{100 * max(constant):.0f} % of the points")
    for mode, e in screen.items():
        assert e["stage2"] == mode and e["queries_per_fingerprint"] == e["queries_max"] == 400
        assert (e["n_train"], e["n_test"], e["decoder_epochs"]) == (single["n_train"], single["n_test"], single["decoder_epochs"])
        assert e["route_matches_target_label"] == 1.0 and e["hashes"]["stage1"] == screen["reknot"]["hashes"]["stage1"]
        _one(rf"\| 100 \+ 300, `{mode}`: [^|]+ \| (\*\*)?{e['ssim']:.3f} \({e['ssim_full_map']:.3f}\)(\*\*)? \| {e['psnr']:.2f} dB "
             rf"\| {100 * e['class_recovery']:.1f} % \| {e['entropy_bits_stage2_within_route']:.0f} \|")
    _one(rf"\| 400 learned points, one set \(`learned.json` `k400-e2-b0.1`\) \| {single['ssim']:.3f} "
         rf"\({single['ssim_full_map']:.3f}\) \| {single['psnr']:.2f} dB \| {100 * single['class_recovery']:.1f} % \|")
    reknot, shared = screen["reknot"], screen["shared"]
    _one(rf"the adaptive knots add {reknot['ssim'] - shared['ssim']:.3f} interior SSIM to the same points asked "
         rf"non-adaptively,\s+which in turn add {shared['ssim'] - single['ssim']:.3f} to one set of 400")
    assert full["route_matches_target_label"] == 1.0 and full["queries_max"] == 400 and full["stage2"] == "reknot"
    assert full["hashes"]["model"] == one_set["hashes"]["model"] and full["decoder_epochs"] == one_set["decoder"]["epochs"]
    _one(rf"{full['learn_seconds']} s of learning,\s+{full['decoder_seconds']} s of decoder and scoring")
    _one(rf"\*\*400 queries, {full['ssim']:.3f} interior SSIM\s+\({full['ssim_full_map']:.3f} full map\), "
         rf"{full['psnr']:.2f} dB, {100 * full['class_recovery']:.1f} % class recovery\*\*, against "
         rf"{one_set['ssim']:.3f} \({one_set['ssim_full_map']:.3f}\), {one_set['psnr']:.2f} dB, "
         rf"{100 * one_set['class_recovery']:.1f} % for the")
    error = one_set["ssim_std"] / 100
    assert abs(full["ssim"] - one_set["ssim"]) < error
    _one(rf"equal within the standard error \({error:.4f}\)")
    _one(rf"best\s+validation epoch was {full['best_epoch']} of the {full['decoder_epochs']} allowed \(the one-set cell's: "
         rf"{one_set['decoder']['best_epoch']}\)")
    wrong, n = full["target_wrong_victims"], full["n_test"]
    assert round(full["route_matches_true_label"], 4) == round(1 - wrong / n, 4) == 0.9805  # routes are the target's labels
    _one(rf"\*\*{100 * full['class_recovery_where_target_right']:.1f} % of the {n - wrong:,} victims hecnn labels right, "
         rf"{100 * full['class_recovery_where_target_wrong']:.1f} % of the\s+{wrong} it labels wrong\*\*")
    _one(rf"\(screening: {100 * reknot['class_recovery_where_target_right']:.1f} % and "
         rf"{round(reknot['class_recovery_where_target_wrong'] * reknot['target_wrong_victims'])} of "
         rf"{reknot['target_wrong_victims']}\)")
    _one(r"\(per-input adaptive points the same, "
         rf"{full['ssim']:.3f} and {100 * full['class_recovery']:.1f} %; class recovery tracks the")
