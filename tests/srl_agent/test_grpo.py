"""GRPO's pure functions on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from srl_agent import grpo


def test_group_advantages_use_population_std():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [-1.0, 0.2, 0.2, 0.2]])
    adv = grpo.ADVANTAGES["grpo"](rewards, 1e-6)
    # group 0: mean 0.5, population std 0.5 -> +-1
    assert adv[0].tolist() == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-5)
    # group 1: all equal -> 0 (eps keeps it finite)
    assert adv[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    # group 2: mean -0.1, deviations -0.9, 0.3 x3; population std sqrt((0.81 + 3 * 0.09) / 4) = sqrt(0.27)
    std = math.sqrt(0.27)
    assert adv[2].tolist() == pytest.approx([-0.9 / std, 0.3 / std, 0.3 / std, 0.3 / std], abs=1e-5)


def test_drgrpo_advantage_is_centred_only():
    adv = grpo.ADVANTAGES["drgrpo"](torch.tensor([[1.0, 0.0, 0.5]]), 1e-6)
    assert adv[0].tolist() == pytest.approx([0.5, -0.5, 0.0])


def test_std_filter_keeps_groups_with_spread():
    rewards = torch.tensor([[-1.0, -1.0, -1.0], [0.3, 0.3, 0.3], [0.3, 0.3, 0.30001], [-1.0, 0.2, 0.2]])
    assert grpo.FILTERS["std"](rewards, 1e-4).tolist() == [False, False, False, True]
    assert grpo.FILTERS["std"](rewards, 1e-6).tolist() == [False, False, True, True]


def test_dapo_filter_drops_all_right_and_all_wrong():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert grpo.FILTERS["dapo"](rewards, 1e-4).tolist() == [False, False, True, True]
    assert grpo.FILTERS["none"](rewards, 0.0).tolist() == [True] * 4


def test_ppo_clip_loss_by_hand():
    # ratios: e^0 = 1, e^0.5 = 1.6487 (clipped to 1.2 for A > 0), e^-0.5 = 0.6065 (clipped to 0.8 for A < 0)
    logp = torch.tensor([[0.0, 0.5, -0.5]])
    old = torch.zeros(1, 3)
    mask = torch.tensor([[1.0, 1.0, 1.0]])
    loss, clipped = grpo.ppo_clip_loss(logp, old, torch.tensor([2.0]), mask, clip_eps=0.2)
    # A = +2: min(r*A, clip(r)*A) = 2, 2.4 (clipped), 1.2131 (unclipped is smaller)
    assert loss[0].tolist() == pytest.approx([-2.0, -2.4, -2.0 * math.exp(-0.5)], abs=1e-5)
    assert clipped[0].tolist() == [False, True, False]
    loss, clipped = grpo.ppo_clip_loss(logp, old, torch.tensor([-1.0]), mask, clip_eps=0.2)
    # A = -1: min(-r, -clip(r)) = -1, -1.6487 (unclipped), -0.8 (clipped)
    assert loss[0].tolist() == pytest.approx([1.0, math.exp(0.5), 0.8], abs=1e-5)
    assert clipped[0].tolist() == [False, False, True]


def test_ppo_clip_loss_asymmetric_and_masked():
    logp = torch.tensor([[0.5, 0.5]])
    loss, _ = grpo.ppo_clip_loss(
        logp,
        torch.zeros(1, 2),
        torch.tensor([1.0]),
        torch.tensor([[1.0, 0.0]]),
        clip_eps=0.2,
        clip_eps_high=0.28,
    )
    assert loss[0].tolist() == pytest.approx([-1.28, 0.0])


def test_gradient_of_on_policy_loss_is_the_policy_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = grpo.ppo_clip_loss(logp, logp.detach(), torch.tensor([3.0]), torch.ones(1, 2))
    grpo.token_mean(loss, torch.ones(1, 2), 2.0, 1.0).backward()
    assert logp.grad.tolist() == [[-1.5, -1.5]]  # -A / tokens


def test_kl_estimators():
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -1.0]])
    assert grpo.KL_ESTIMATORS["k1"](logp, ref).tolist() == [[0.0, -1.0]]
    # k3 = e^(ref-logp) - (ref-logp) - 1: 0 and e - 2
    assert grpo.KL_ESTIMATORS["k3"](logp, ref)[0].tolist() == pytest.approx([0.0, math.e - 2.0])


def test_loss_aggregation_over_micro_batches_equals_the_full_batch():
    per_token = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # token mean: (1 + 2 + 3 + 4 + 5 + 6) / 6 tokens
    full = grpo.LOSS_AGG["token_mean"](per_token, mask, 6.0, 3.0)
    parts = sum(
        grpo.LOSS_AGG["token_mean"](per_token[i : i + 1], mask[i : i + 1], 6.0, 3.0) for i in range(3)
    )
    assert float(full) == pytest.approx(3.5) == float(parts)
    # sequence mean of token means: (1.5 + 3 + 5) / 3
    assert float(grpo.LOSS_AGG["seq_mean_token_mean"](per_token, mask, 6.0, 3.0)) == pytest.approx(9.5 / 3)


def test_sft_loss_is_masked_nll():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9]]))
    loss = grpo.sft_token_loss(logp, torch.tensor([[1.0, 1.0, 0.0]]))
    assert loss[0].tolist() == pytest.approx([math.log(2), math.log(4), 0.0])
