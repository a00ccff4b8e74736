"""Defenses against the signature attack (client policies), the attackers who know them, the
client's search detector and the defense study (issue 19)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from hesig.core.errors import ClientRefusal, InvalidValueError
from hesig.defenses.detector import HONEST_KINDS, SearchDetector, honest_traffic
from hesig.defenses.utility import honest_accuracy
from hesig.oracles.plaintext import PlaintextOracle
from hesig.oracles.policies import ClientView, parse_client_policy
from hesig.signature.attackers import NoisyBisection, parse_attacker
from hesig.signature.search import BoundarySearch


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 4))


def _secrets(n=6):
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))


def _directions(k=5):
    d = torch.randn(k, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    return d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def test_defense_specs_round_trip_and_bad_ones_are_one_line():
    for spec in ("rr:0.1", "bdpl:0.4@2", "input-noise:0.1+evaluations:100", "flooding:1+rr:0.2"):
        policy = parse_client_policy(spec)
        assert parse_client_policy(policy.spec) == policy and policy.spec == "strict+" + spec
    for bad, message in (("rr:0.5", r"\[0, 0.5\)"), ("bdpl:0.4", "bdpl:P@MARGIN"), ("rr:0.1@2", "bdpl:P@MARGIN"),
                         ("rr:0.1+bdpl:0.2@1", "both rr and bdpl"), ("bdpl:0.2@0", "margin must be > 0"),
                         ("input-noise:nan", "input noise"), ("evaluations:0", "evaluation budget"),
                         ("undefended+rr:0.1", "cannot be combined"), ("smoothing:3", "unknown client policy"),
                         ("rr:x", "needs a number")):
        with pytest.raises(InvalidValueError, match=message):
            parse_client_policy(bad)


def test_input_noise_is_refused_for_an_encrypted_client_in_one_line():
    with pytest.raises(InvalidValueError, match="plaintext oracle only"):
        parse_client_policy("input-noise:0.1").check_encrypted()
    assert parse_client_policy("rr:0.1+evaluations:5").check_encrypted().runner_up_p == 0.1


def test_randomized_response_flips_the_bit_both_ways_near_the_boundary_and_bdpl_only_there():
    logits = np.zeros((4, 20001))
    logits[0, :10000], logits[1, :10000] = 1.0, 0.5    # reference class 0 ahead by 0.5: bit "same"
    logits[1, 10000:20000], logits[0, 10000:20000] = 1.0, 0.5  # class 1 ahead by 0.5: bit "changed"
    logits[0, -1] = 9.0                                  # the unperturbed column: class 0, confident
    for spec, near in (("rr:0.2", 0.2), ("bdpl:0.2@1", 0.2), ("bdpl:0.2@0.25", 0.0)):
        policy = parse_client_policy(spec)
        bits, label = policy.release(logits, None, policy.rng(3))
        assert label == 0  # the reference is the client's own answer, never randomized
        assert abs((~bits[:10000]).mean() - near) < 0.015 and abs(bits[10000:].mean() - near) < 0.015


def test_the_client_view_counts_true_flips_margins_and_evaluations():
    view = ClientView()
    logits = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.0]])  # reference 0: margins 2, -1, 0
    view.record(np.array([0, 0, 1]), logits, np.array([0, 0, 0]))
    f = view.features()
    assert f["evaluations"].tolist() == [2, 1] and f["flip_rate"].tolist() == [0.5, 0.0]
    assert f["margin_std"][0] == pytest.approx(1.5)


def test_plaintext_defenses_are_seeded_budgets_refuse_and_the_view_fills():
    pert = torch.randn(300, 1, 4, 4, generator=torch.Generator().manual_seed(4)) * 2
    rows = torch.arange(300) % 6

    def bits(spec, seed):
        return PlaintextOracle(_model(), _secrets(), policy=spec, seed=seed, device="cpu").same_label(pert, rows)
    for spec in ("input-noise:0.3", "rr:0.2", "flooding:1"):
        assert torch.equal(bits(spec, 1), bits(spec, 1)) and not torch.equal(bits(spec, 1), bits(spec, 2))
    oracle = PlaintextOracle(_model(), _secrets(), policy="evaluations:60", device="cpu")
    oracle.same_label(pert[:300], rows)          # 50 per row
    assert oracle.view.features()["evaluations"].tolist() == [50] * 6
    with pytest.raises(ClientRefusal, match="evaluation budget of 60"):
        oracle.same_label(pert[:66], rows[:66])  # 11 more per row


def test_honest_accuracy_drops_by_about_the_randomized_response_probability():
    x = torch.rand(2000, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    model = _model()
    y = model(x).argmax(1)  # the model is always right on its own labels
    assert honest_accuracy(model, x, y, "strict") == 1.0
    assert honest_accuracy(model, x, y, "rr:0.2", seed=1) == pytest.approx(0.8, abs=0.03)
    assert honest_accuracy(model, x, y, "evaluations:1") == 1.0


def test_adaptive_searches_recover_the_standard_fingerprint():
    model, x, dirs = _model(), _secrets(), _directions()
    eps_max = 20.0
    clean = BoundarySearch(eps_max, rtol=1e-3).run(PlaintextOracle(model, x, device="cpu"), dirs)
    finite = ~clean.censored

    def close(res, tol):
        assert torch.equal(res.censored, clean.censored)
        assert ((res.eps - clean.eps).abs()[finite] <= tol * clean.eps[finite] + 1e-6).all()

    # Low-flip: the same boundary, fewer flips than the standard search.
    standard_view = PlaintextOracle(model, x, policy="strict", device="cpu")
    parse_attacker("standard", eps_max=eps_max, rtol=1e-3).run(standard_view, dirs)
    low = PlaintextOracle(model, x, policy="strict", device="cpu")
    close(parse_attacker("low-flip:0.1", eps_max=eps_max, rtol=1e-3).run(low, dirs), 2e-3)
    assert low.view.features()["flip_rate"].mean() < 0.5 * standard_view.view.features()["flip_rate"].mean()
    # Majority vote through 10 % randomized response: the clean answer, at 5x the queries.
    noisy = PlaintextOracle(model, x, policy="rr:0.1", seed=3, device="cpu")
    voted = parse_attacker("vote:5", eps_max=eps_max, rtol=1e-3).run(noisy, dirs)
    assert (voted.eps[finite] - clean.eps[finite]).abs().median() < 0.05
    assert noisy.queries == int(voted.queries.sum()) and voted.queries.sum() > 4 * clean.queries.sum()
    # Probabilistic bisection: within two grid bins on a noise-free oracle, exactly T queries a pair.
    bayes = NoisyBisection(0.01, 30, eps_max=eps_max, grid=256).run(PlaintextOracle(model, x, device="cpu"), dirs)
    assert torch.equal(bayes.censored, clean.censored) and (bayes.queries == 30).all()
    assert ((bayes.eps - clean.eps).abs()[finite] <= 2 * eps_max / 256 + 1e-4).all()
    # Budgeted: never more than N evaluations for any input.
    capped = PlaintextOracle(model, x, policy="evaluations:20", device="cpu")
    res = parse_attacker("budgeted:20", eps_max=eps_max, directions=5).run(capped, dirs)
    assert int(res.queries.sum(1).max()) <= 20 and torch.equal(res.censored, clean.censored)
    # Grid: one round of G points per direction, the first crossing to eps_max / G.
    grid = parse_attacker("grid:40", eps_max=eps_max).run(PlaintextOracle(model, x, device="cpu"), dirs)
    assert grid.rounds == 1 and (grid.queries == 40).all() and torch.equal(grid.censored, clean.censored)
    assert ((grid.eps - clean.eps)[finite] >= -1e-5).all() and ((grid.eps - clean.eps)[finite] <= eps_max / 40 + 1e-5).all()


def test_bad_attackers_are_one_line():
    for bad, message in (("vote:4", "odd"), ("bayes:0.5", r"\[0, 0.5\)"), ("bayes:0.1@0", "T >= 1"),
                         ("low-flip:0.6", r"\(0, 0.5\)"), ("budgeted:3", "cannot ask each of 5"), ("grid:0", "G >= 1"),
                         ("oracle-free", "unknown attacker"), ("vote:x", "needs an integer")):
        with pytest.raises(InvalidValueError, match=message):
            parse_attacker(bad, directions=5)


def test_the_detector_holds_its_false_positive_rate_and_flags_a_search():
    model = _model()
    honest = [np.concatenate([honest_traffic(model, _secrets(30), kind, "strict", seed=s * 10 + k, device="cpu")
                              for k, kind in enumerate(HONEST_KINDS)]) for s in range(3)]
    detector = SearchDetector(0.05).fit(honest[0], honest[1])
    report_honest = (detector.score(honest[2]) > detector.threshold).mean()
    assert report_honest <= 0.15  # 5 % target on 120 fresh sessions
    oracle = PlaintextOracle(model, _secrets(30), policy="strict", device="cpu")
    BoundarySearch(20.0).run(oracle, _directions(20))
    from hesig.defenses.detector import view_features
    report = detector.report(view_features(oracle.view), honest[2])
    assert report["tpr"] > 0.9 and report["roc"][0][0] <= report["roc"][-1][0]
    with pytest.raises(InvalidValueError, match="false-positive rate"):
        SearchDetector(0.7)
    with pytest.raises(InvalidValueError, match="fit the detector"):
        SearchDetector().score(honest[0])


def test_study_defenses_runs_resumes_reuses_cells_and_refuses_other_settings(tmp_path, workspace, cli):
    out = tmp_path / "study"
    args = ["study-defenses", "--dataset", "digits", "--arch", "mlp", "--out", out, "--n-train", "200",
            "--n-test", "30", "--n-honest", "10", "--count", "12", "--decoder-epochs", "1", "--quiet",
            "--model-from", workspace / "model", "--evaluator-from", workspace / "evaluator",
            "--grid", "none=standard,low-flip:0.1;rr:0.1=standard,vote:3;evaluations:40=budgeted:40,standard"]
    code, _, err = cli.run(*args)
    assert code == 0, err
    cells = {(c["defense"], c["attacker"]): c for c in
             (json.loads(p.read_text()) for p in (out / "steps").glob("cell-*.json"))}
    assert len(cells) == 6
    assert cells[("evaluations:40", "standard")]["refused"] and not cells[("evaluations:40", "budgeted:40")]["refused"]
    assert set(cells[("none", "standard")]["decoders"]) == {"adaptive", "non-adaptive"}
    vote = cells[("rr:0.1", "vote:3")]
    assert vote["queries_per_fingerprint"] > 2.5 * cells[("none", "standard")]["queries_per_fingerprint"]
    assert cells[("rr:0.1", "standard")]["honest_accuracy"] < cells[("none", "standard")]["honest_accuracy"]
    assert 0 <= vote["detection"]["tpr"] <= 1 and vote["baselines"]["baseline_class_mean"]["ssim_full_map_mean"] > 0
    before = {p.name: p.stat().st_mtime_ns for p in (out / "steps").iterdir()}
    assert cli.run(*args)[0] == 0  # finished: nothing recomputed
    assert {p.name: p.stat().st_mtime_ns for p in (out / "steps").iterdir()} == before
    # A grid row run apart reuses its finished cells; other settings are refused.
    assert cli.run(*args[:-1], "rr:0.1=vote:3")[0] == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "steps").iterdir()} == before
    code, _, err = cli.run(*[a if a != "12" else "10" for a in args])
    cli.assert_error(code, err, "choose another --out")
    for grid, fragment in (("none", "DEFENSE=ATTACKER"), ("rr:0.7=standard", "[0, 0.5)"),
                           ("none=vote:2", "odd R"), ("strict+rr:0.1=standard", "added to 'strict'"),
                           ("input-noise:0.1=standard;input-noise:0.1=standard", "twice")):
        code, _, err = cli.run(*args[:-2], "--grid", grid)
        cli.assert_error(code, err, fragment)
    code, _, err = cli.run(*args, "--defenses", "rr:0.3")
    cli.assert_error(code, err, "not in the grid")
