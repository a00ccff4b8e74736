"""The learned direction family: query points (direction and ε) trained by the model owner (issue 24)."""

from __future__ import annotations

import pytest
import torch

from hesig.core.errors import CheckpointError, InvalidValueError
from hesig.core.io import load_tensors, save_tensors
from hesig.jobs.study import StudySettings
from hesig.oracles.plaintext import PlaintextOracle
from hesig.signature.directions import Directions, make_directions, parse_mix

SHAPE = (1, 8, 8)
EPS_MAX = 12.0


@pytest.fixture(scope="module")
def owner(digits_owner):
    model, train = digits_owner
    return model, train.images


def learn(owner, count=12, seed=0, **options):
    model, images = owner
    options = {"learn_epochs": 1, "learn_images": 256, "eps_max": EPS_MAX, **options}
    return make_directions("learned", count, SHAPE, seed, model=model, train_images=images, **options)


@pytest.fixture(scope="module")
def points(owner):
    return learn(owner)


def test_learned_points_are_unit_directions_with_one_knot_each_and_seeded(owner, points):
    assert all(p.requires_grad for p in owner[0].parameters())  # the owner's model is left as it was
    assert points.vectors.shape == (12, *SHAPE) and points.knots.shape == (12, 1)
    assert torch.allclose(points.vectors.flatten(1).norm(dim=1), torch.ones(12), atol=1e-5)
    assert (points.knots > 0).all() and (points.knots <= EPS_MAX).all()
    assert points.knots_eps_max == EPS_MAX and points.point_search().steps == 1
    assert learn(owner).hash == points.hash                    # same seed, same bytes
    assert learn(owner, seed=1).hash != points.hash
    history = points.params["history"]
    assert [h["epoch"] for h in history] == [0, 1] and points.params["learn_images"] == 256
    # The hash covers the knots: the same vectors asked elsewhere are another set.
    moved = Directions(points.vectors, "learned", 0, knots=points.knots * 0.5, knots_eps_max=EPS_MAX)
    assert moved.hash != points.hash


def test_learned_sets_have_no_prefix_so_first_refuses_a_part(points):
    assert not points.nested
    assert points.first(12) is points
    with pytest.raises(InvalidValueError, match="not a set of 5"):
        points.first(5)


def test_the_search_asks_each_point_exactly_once_at_its_knot(owner, points):
    """Closed form: a pair flips at its knot or is censored; eps is the knot; one query per pair."""
    model, images = owner
    victims = images[:40]
    result = points.point_search().run(PlaintextOracle(model, victims), points.vectors)
    assert (result.queries == 1).all()
    knots = points.knots[:, 0].float()
    with torch.no_grad():
        labels = model(victims).argmax(1)
        moved = victims[:, None] + knots.view(1, -1, 1, 1, 1) * points.vectors[None]
        flips = model(moved.flatten(0, 1)).argmax(1).view(40, 12) != labels[:, None]
    assert torch.equal(~result.censored, flips)
    assert torch.equal(result.eps[flips], knots.expand(40, 12)[flips])
    assert torch.isinf(result.eps[~flips]).all() and torch.equal(result.eps_lo[~flips], knots.expand(40, 12)[~flips])


def test_saved_points_round_trip_and_tampering_is_caught(points, tmp_path):
    path = points.save(tmp_path / "learned.safetensors")
    loaded = Directions.load(path)
    assert loaded.hash == points.hash and torch.equal(loaded.knots, points.knots)
    assert loaded.knots_eps_max == EPS_MAX and loaded.params["tau"] == points.params["tau"]
    tensors, meta = load_tensors(path)
    save_tensors(tmp_path / "moved.safetensors", {**tensors, "knots": tensors["knots"] * 0.9}, meta)
    with pytest.raises(CheckpointError, match="hash does not match"):
        Directions.load(tmp_path / "moved.safetensors")
    save_tensors(tmp_path / "bare.safetensors", {"directions": tensors["directions"]}, meta)
    with pytest.raises(CheckpointError, match="query points need both"):
        Directions.load(tmp_path / "bare.safetensors")
    save_tensors(tmp_path / "far.safetensors", {**tensors, "knots": tensors["knots"] + 2 * EPS_MAX},
                 {**meta, "directions_hash": None})
    with pytest.raises(CheckpointError, match="knots must be finite and in"):
        Directions.load(tmp_path / "far.safetensors")


def test_learned_points_refuse_mixes_bad_options_and_the_defense_study(owner):
    with pytest.raises(InvalidValueError, match="unknown family 'learned' in mix"):
        parse_mix("random:1,learned:1")
    for bad, match in (({"learn_epochs": 0}, "learn epochs"), ({"learn_balance": -1.0}, "learn balance"),
                       ({"learn_images": 1}, "learn images")):
        with pytest.raises(InvalidValueError, match=match):
            learn(owner, **bad)
        with pytest.raises(InvalidValueError, match=match):
            StudySettings(**bad)
    from hesig.jobs.defense_study import DefenseStudySettings
    with pytest.raises(InvalidValueError, match="not supported there"):
        DefenseStudySettings(family="learned")


def test_cli_learned_options_need_the_family_and_points_take_no_prior(cli, workspace, tmp_path):
    code, _, err = cli.run("directions", "--dataset", "digits", "--learn-epochs", "2", "--out", tmp_path / "d.safetensors")
    cli.assert_error(code, err, "--learn-epochs only applies to --family learned")
    out = tmp_path / "learned.safetensors"
    code, _, err = cli.run("directions", "--dataset", "digits", "--family", "learned", "--count", "6", "--model",
                           workspace / "model", "--learn-epochs", "1", "--learn-images", "128", "--out", out)
    assert code == 0, err
    code, _, err = cli.run("fingerprint", "--model", workspace / "model", "--directions", out, "--dataset", "digits",
                           "--indices", "0:5", "--prior", workspace / "fp_train.safetensors", "--prior-steps", "1",
                           "--out", tmp_path / "fp.safetensors", "--quiet")
    cli.assert_error(code, err, "carries its own query points", "takes no --prior")
    assert not (tmp_path / "fp.safetensors").exists()
    code, out_text, err = cli.run("fingerprint", "--model", workspace / "model", "--directions", out, "--dataset",
                                  "digits", "--indices", "0:5", "--out", tmp_path / "fp.safetensors", "--quiet")
    assert code == 0, err
    from hesig.signature.fingerprints import Fingerprints
    fp = Fingerprints.load(tmp_path / "fp.safetensors")
    assert (fp.queries == 1).all() and fp.meta["search"]["kind"] == "prior"
    assert fp.meta["search"]["prior"]["source"] == "directions"


def test_a_study_builds_one_learned_set_per_count_and_asks_each_point_once(workspace, cli, tmp_path):
    common = ["study-directions", "--dataset", "digits", "--arch", "mlp", "--out", tmp_path / "study",
              "--families", "learned,random", "--counts", "4,6", "--precisions", "1:0.3", "--n-train", "200",
              "--n-test", "30", "--decoder-epochs", "1", "--learn-epochs", "1", "--learn-images", "128",
              "--model-from", workspace / "model", "--evaluator-from", workspace / "evaluator", "--quiet"]
    code, _, err = cli.run(*common)
    assert code == 0, err
    from hesig.jobs.study import collect_cells
    cells = {(c["family"], c["count"]): c for c in collect_cells(tmp_path / "study")}
    assert sorted(cells) == [("learned", 4), ("learned", 6), ("random", 4), ("random", 6)]
    for count in (4, 6):
        learned = cells["learned", count]
        assert learned["queries_per_fingerprint"] == count and learned["search"] == "prior"  # one query per point
        assert learned["hashes"]["directions"] == learned["hashes"]["directions_full"]      # a whole set, no prefix
        assert Directions.load(tmp_path / "study" / f"learned-k{count}" / "directions.safetensors").count == count
        assert learned["learn"] == {"epochs": 1, "balance": 0.1, "images": 128}  # how the points were trained
    assert "learn" not in cells["random", 6]
    assert cells["learned", 4]["hashes"]["directions"] != cells["learned", 6]["hashes"]["directions"]
    assert cells["random", 6]["queries_per_fingerprint"] > 6
    code, _, err = cli.run(*common)  # a rerun resumes: nothing is learned or fingerprinted again
    assert code == 0 and "directions" not in err and "fingerprints" not in err
    code, _, err = cli.run(*[a if a != "128" else "100" for a in common])
    cli.assert_error(code, err, "another --out")
