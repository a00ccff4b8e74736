"""The oracle protocol's seams: the registry of kinds, costs, and oracle wrappers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hesig.core.defaults import ORACLES
from hesig.core.errors import InvalidValueError, QueryBudgetExhausted
from hesig.oracles.base import OracleWrapper, add_costs
from hesig.oracles.plaintext import PlaintextOracle
from hesig.oracles.registry import KINDS, oracle_kind
from hesig.signature.attackers import MajorityVote


def _oracle(n=3, budget=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    secrets = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return PlaintextOracle(model, secrets, device="cpu", batch_size=64, budget=budget)


def test_registry_lists_every_kind_once_and_refuses_unknown_names():
    assert tuple(KINDS) == ORACLES
    assert oracle_kind("plaintext").chunk_size == 1000 and oracle_kind("ckks").chunk_size == 1
    with pytest.raises(InvalidValueError, match="unknown oracle 'quantum'"):
        oracle_kind("quantum")


def test_plaintext_factory_builds_oracles_that_report_no_costs():
    class Target:  # what load_model returns, as far as the factory looks
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    make = oracle_kind("plaintext").factory(Target(), device="cpu", batch_size=8, layout="ignored")
    oracle = make(torch.rand(2, 1, 4, 4), 10)
    assert oracle.capacity == 8 and oracle.budget == 10 and oracle.costs() == {} and make.describe() == {}


def test_add_costs_sums_key_by_key():
    assert add_costs({"a": 1, "s": 0.5}, {"a": 2, "b": 3, "s": 0.25}) == {"a": 3, "b": 3, "s": 0.75}


def test_a_transparent_wrapper_answers_like_the_oracle_and_counts_both_sides():
    inner, reference = _oracle(), _oracle()
    wrapped = OracleWrapper(inner)
    pert = torch.randn(50, 1, 4, 4, generator=torch.Generator().manual_seed(2)) * 3
    rows = torch.arange(50) % 3
    assert torch.equal(wrapped.same_label(pert, rows), reference.same_label(pert, rows))
    assert wrapped.queries == inner.queries == 50
    assert (wrapped.num_rows, wrapped.input_shape, wrapped.capacity) == (3, (1, 4, 4), 64)


def test_a_majority_vote_asks_each_query_r_times_and_counts_both_sides():
    pert = torch.randn(300, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 3
    rows = torch.arange(300) % 3
    truth = _oracle().same_label(pert, rows)
    inner = _oracle()
    vote = MajorityVote(inner, 5)
    assert torch.equal(vote.same_label(pert, rows), truth)  # a noise-free oracle: the vote is the bit
    assert (vote.queries, inner.queries, vote.capacity) == (300, 1500, 64 // 5)


def test_wrapper_budget_is_the_attackers_and_bad_repeats_are_refused():
    wrapped = MajorityVote(_oracle(), 3, budget=10)
    with pytest.raises(QueryBudgetExhausted):
        wrapped.same_label(torch.zeros(11, 1, 4, 4), torch.zeros(11, dtype=torch.long))
    assert wrapped.inner.queries == 0  # refused before the inner oracle was asked
    for r in (0, 2, -1, 1.5):
        with pytest.raises(InvalidValueError, match="odd number of repeats"):
            MajorityVote(_oracle(), r)


def test_hesig_gpu_exact_turns_tf32_off_and_a_bad_value_is_refused(monkeypatch):
    """A GPU oracle in TF32 is a slightly different function from the model (README, Benchmarks:
    97 % of ε bit-equal to the CPU's with TF32, 99.99 % without). The switch is process-wide, so
    it is set in one place; the flags are plain attributes, so the CPU can check that place."""
    from hesig.core.runtime import apply_gpu_precision, describe_device, resolve_device

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:  # torch's matmul switch is not a plain attribute monkeypatch could restore: save it by hand
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        monkeypatch.delenv("HESIG_GPU_EXACT", raising=False)
        assert apply_gpu_precision() is False and torch.backends.cudnn.allow_tf32  # PyTorch's default stays
        monkeypatch.setenv("HESIG_GPU_EXACT", "0")
        assert apply_gpu_precision() is False and torch.backends.cuda.matmul.allow_tf32
        monkeypatch.setenv("HESIG_GPU_EXACT", "1")
        assert apply_gpu_precision() is True
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert describe_device("cpu") == {"device": "cpu", "gpu": None, "torch": torch.__version__}
    monkeypatch.setenv("HESIG_GPU_EXACT", "yes")
    with pytest.raises(InvalidValueError, match="HESIG_GPU_EXACT must be 0 or 1, not 'yes'"):
        resolve_device("cpu")
