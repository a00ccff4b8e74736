"""Shared fixtures: the CLI run in-process, the one-line-error check, a trained digits workspace,
the digits model owner of the direction tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from hesig.cli import main


@dataclass
class CLI:
    """``run(*argv) -> (exit code, stdout, stderr)`` in-process; ``assert_error`` checks a user error."""

    capsys: pytest.CaptureFixture

    def run(self, *argv) -> tuple[int, str, str]:
        code = 0
        try:
            main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = self.capsys.readouterr()
        return code, out, err

    @staticmethod
    def assert_error(code: int, err: str, *fragments: str, exit_code: int = 2) -> None:
        """One clear line on stderr, the expected exit code, no traceback, every fragment present."""
        assert code == exit_code, err
        assert "Traceback" not in err
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert len(lines) <= 3, err  # click usage errors print "Usage/Try" lines before the error line
        for fragment in fragments:
            assert fragment in err, err


@pytest.fixture
def cli(capsys) -> CLI:
    return CLI(capsys)


def build_workspace(ws: Path) -> Path:
    """A trained digits target + evaluator, directions, train/test fingerprints and a decoder in ``ws``."""
    for args in (
        ["train-model", "--dataset", "digits", "--arch", "mlp", "--epochs", "15", "--out", ws / "model", "--quiet"],
        ["train-model", "--dataset", "digits", "--arch", "mlp", "--epochs", "15", "--seed", "7", "--out", ws / "evaluator", "--quiet"],
        ["directions", "--dataset", "digits", "--count", "24", "--out", ws / "dirs.safetensors"],
        ["directions", "--dataset", "digits", "--count", "24", "--seed", "1", "--out", ws / "dirs_other.safetensors"],
        ["fingerprint", "--model", ws / "model", "--directions", ws / "dirs.safetensors", "--dataset", "digits",
         "--split", "train", "--out", ws / "fp_train.safetensors", "--quiet"],
        ["fingerprint", "--model", ws / "model", "--directions", ws / "dirs.safetensors", "--dataset", "digits",
         "--split", "test", "--indices", "0:120", "--out", ws / "fp_test.safetensors", "--quiet"],
        ["train-decoder", "--fingerprints", ws / "fp_train.safetensors", "--out", ws / "decoder", "--epochs", "4", "--quiet"],
    ):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None), f"setup step failed: {args}"
    return ws


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A trained digits workspace shared by the CLI tests (read-only for them)."""
    return build_workspace(tmp_path_factory.mktemp("ws"))


@pytest.fixture(scope="session")
def digits_owner():
    """The model owner of the direction tests: an mlp trained on the digits train split (seed 0,
    eval mode), and that split."""
    import torch
    from hesig.data import load_dataset
    from hesig.models import build_model, train_classifier
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = build_model("mlp", tuple(train.images.shape[1:]), 10)
    train_classifier(model, train.images, train.labels, epochs=15, batch_size=64, lr=2e-3, seed=0, progress=False)
    return model.eval(), train
