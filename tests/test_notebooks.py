"""The notebooks: stripped in git, one paper-scale switch each, and they run top to bottom.

Each notebook is executed from a fresh kernel with its small settings (about two minutes each on
2 CPU cores; ``benchmarks/notebooks.py`` times them) in a temporary working directory, two at a
time, and the ``summary.json`` it writes is checked, so a notebook that breaks or silently stops
showing the leak fails the suite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_encrypted_query_leakage", "02_directions_and_budgets", "03_collaborative_inference",
            "04_vicious_classifiers", "05_defenses"]
#: Per-cell limit; the small settings need a fraction of it.
CELL_TIMEOUT_S = 900


def _code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_five_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_has_one_paper_scale_switch(path):
    nbformat.validate(nbformat.read(path, as_version=4))
    for cell in _code_cells(path):
        assert cell.outputs == [] and cell.execution_count is None, f"{path.name} carries outputs: strip them"
    switches = [line for cell in _code_cells(path) for line in cell.source.splitlines()
                if line.startswith("PAPER_SCALE =")]
    assert len(switches) == 1 and switches[0].startswith("PAPER_SCALE = False"), switches


def _check_01(s):
    ckks = s["ckks"]
    assert ckks["queries"] > 1000 and ckks["evaluations"] >= 1 and ckks["upload_bytes"] > 1e6
    assert ckks["reply_bytes"] * 8 >= ckks["queries"]  # one bit per query came back, no more than bytes allow
    # The fingerprint through CKKS equals the plaintext one within the two searches' 1 % tolerances.
    assert s["ckks_vs_plaintext_max_relative_eps_difference"] < 0.025
    sweep = s["sweep"]
    assert abs(sweep["first_flip_in_sweep"] - sweep["eps_i"]) <= 0.03 * sweep["eps_i"]
    shown = s["showcase"]
    assert shown["attack"]["psnr_mean"] > shown["baseline_mean_image"]["psnr_mean"] + 2.0


def _check_02(s):
    assert s["cells"] == 7 * 4  # seven families x four counts
    random_line = s["random_ssim_by_count"]
    counts = sorted(random_line, key=int)
    assert random_line[counts[-1]] > random_line[counts[0]]  # more directions, better reconstructions
    assert s["pareto_front_ssim"] and s["pareto_front_ssim"][-1]["ssim"] > s["class_mean_baseline"]["ssim_mean"]


def _check_03(s):
    attacks = s["attacks"]
    assert set(attacks) == {"rMLE (white box)", "inverse network (black box)", "shadow model (query-free)"}
    assert attacks["inverse network (black box)"]["queries"] == 30000  # all of half b, one query each
    assert attacks["rMLE (white box)"]["queries"] == 0 and attacks["shadow model (query-free)"]["queries"] == 0
    for name in ("rMLE (white box)", "inverse network (black box)"):  # both beat drawing the label's class mean
        assert attacks[name]["protocol"]["psnr_mean"] > s["class_mean_baseline"]["psnr_mean"] + 3.0, name
    assert math.isfinite(attacks["shadow model (query-free)"]["protocol"]["psnr_mean"])  # weak at ReLU2, as in the paper


def _check_04(s):
    assert s["honest"]["accuracy"] > 0.9 and "risk_R" not in s["honest"]
    vicious = s["vicious"]
    assert all(math.isfinite(vicious[k]) for k in ("accuracy", "psnr_mean", "ssim_mean", "risk_R"))
    assert vicious["ssim_mean"] > 0.3
    assert len(s["detection"]["v"]) == 6 and 0.0 <= s["detection"]["auc"] <= 1.0


def _check_05(s):
    cells = s["cells"]
    plain, naive, vote = cells["none / standard"], cells["rr:0.1 / standard"], cells["rr:0.1 / vote:5"]
    # The defense costs honest users about its flip probability, and the vote about 5x the queries.
    assert 0.04 < plain["honest_accuracy"] - naive["honest_accuracy"] < 0.16
    assert 4.0 < vote["query_ratio"] < 6.0 and cells["rr:0.1 / bayes:0.1"]["query_ratio"] > 1.0
    # The adaptive attacker gets back (most of) what the defense took from the naive one.
    assert vote["decoders"]["adaptive"]["psnr"] > naive["decoders"]["non-adaptive"]["psnr"]
    assert plain["decoders"]["adaptive"]["psnr"] > s["class_mean_baseline"]["psnr_mean"]
    assert plain["tpr"] >= 0.9 and 0.0 <= cells["none / low-flip:0.1"]["tpr"] <= 1.0


CHECKS = {"01_encrypted_query_leakage": _check_01, "02_directions_and_budgets": _check_02,
          "03_collaborative_inference": _check_03, "04_vicious_classifiers": _check_04, "05_defenses": _check_05}


#: Executes one notebook from a fresh kernel in its own process: ``python -c RUNNER NOTEBOOK FOLDER TIMEOUT``.
RUNNER = """
import sys
import nbformat
from nbclient import NotebookClient
path, folder, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
NotebookClient(nbformat.read(path, as_version=4), timeout=timeout, kernel_name="python3",
               resources={"metadata": {"path": folder}}).execute()
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook run top to bottom, each from a fresh kernel in an empty folder, two at a time
    with one torch thread each: a notebook takes about as long on one thread as on two
    (benchmarks/notebooks.json measures them on one), so on 2 cores this halves the suite's
    notebook time. Returns {stem: (exit code, stderr tail, folder)}."""
    if not os.environ.get("HESIG_DATA", "").strip():
        pytest.skip("the notebooks read MNIST: set HESIG_DATA to the data folder (CI does)")
    work = tmp_path_factory.mktemp("notebooks")
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}

    def run(path: Path):
        folder = work / path.stem
        folder.mkdir()
        proc = subprocess.run([sys.executable, "-c", RUNNER, str(path), str(folder), str(CELL_TIMEOUT_S)],
                              env=env, capture_output=True, text=True)
        return proc.returncode, proc.stderr[-6000:], folder

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((p.stem for p in NOTEBOOKS), pool.map(run, NOTEBOOKS)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_a_fresh_kernel(path, executed):
    code, err, folder = executed[path.stem]
    assert code == 0, err
    summary = json.loads((folder / "runs" / "notebooks" / path.stem / "summary.json").read_text())
    assert summary["paper_scale"] is False
    CHECKS[path.stem](summary)
