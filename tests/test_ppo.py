import math

import pytest
import torch
from torch import nn

from stableprompt.algorithms.ppo import (
    AdaptiveKLController,
    FixedKLController,
    anchor_decision,
    copy_trainable_state,
    gae,
    kl_per_token,
    load_trainable_state,
    masked_mean,
    masked_whiten,
    ppo_loss,
    token_rewards,
)


def test_masked_mean_and_whiten():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([1.5, 3.0]))
    w = masked_whiten(x, m)
    assert masked_mean(w, m).item() == pytest.approx(0.0, abs=1e-6)
    # unbiased variance of [1, 2, 3] is 1 -> whitened values -1, 0, 1
    torch.testing.assert_close(w[m.bool()], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        masked_whiten(x, m, shift_mean=False)[m.bool()],
        torch.tensor([1.0, 2.0, 3.0]),
        atol=1e-4,
        rtol=0,
    )


def test_kl_identical_zero_and_different_positive():
    logp = torch.log_softmax(torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0)), -1)
    assert torch.all(kl_per_token(logp, logp) == 0)
    ref = torch.log_softmax(torch.zeros(2, 5, 7), -1)
    # Expectation of the k1 estimator under pi is the true KL(pi || ref) > 0.
    kl = (logp.exp() * kl_per_token(logp, ref)).sum(-1)
    assert torch.all(kl > 0)
    assert kl_per_token(torch.tensor([-1.0]), torch.tensor([-1.5])).item() == pytest.approx(0.5)


def test_token_rewards_score_at_last_token():
    score = torch.tensor([2.0, -1.0])
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0], [-1.0, -2.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    r = token_rewards(score, logprobs, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(r, torch.tensor([[-0.05, 2.0, 0.0], [0.0, -0.1, -1.0]]))
    with pytest.raises(ValueError):
        token_rewards(score, logprobs, ref, torch.tensor([[0, 0, 0], [1, 1, 1]]), 0.1)


def test_gae_hand_example():
    rewards = torch.tensor([[0.0, 1.0, 5.0], [0.5, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 9.0], [0.1, 0.3, 0.4]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 0 (padding zeroed): t1: 1 - 0.2 = 0.8; t0: (0 + 0.2 - 0.5) + 0.95 * 0.8 = 0.46
    # row 1: t2: 1 - 0.4 = 0.6; t1: (0 + 0.4 - 0.3) + 0.95*0.6 = 0.67;
    #        t0: (0.5 + 0.3 - 0.1) + 0.95*0.67 = 1.3365
    torch.testing.assert_close(adv, torch.tensor([[0.46, 0.8, 0.0], [1.3365, 0.67, 0.6]]))
    torch.testing.assert_close(ret, torch.tensor([[0.96, 1.0, 0.0], [1.4365, 0.97, 1.0]]))
    # lam = 1, gamma = 1: returns are the undiscounted reward-to-go
    _, ret1 = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret1, torch.tensor([[1.0, 1.0, 0.0], [1.5, 1.0, 1.0]]))


def test_ppo_loss_hand_computation():
    ratios = torch.tensor([[1.5, 0.9, 0.5, 3.0]])
    logprobs = torch.log(ratios).requires_grad_(True)
    old_logprobs = torch.zeros(1, 4)
    advantages = torch.tensor([[1.0, 1.0, -1.0, 5.0]])
    values = torch.tensor([[1.0, 0.0, 0.5, 7.0]], requires_grad=True)
    old_values = torch.tensor([[0.5, 0.0, 0.5, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # last token is padding: must not count
    loss, stats = ppo_loss(
        logprobs,
        old_logprobs,
        advantages,
        values,
        old_values,
        returns,
        mask,
        clip_range=0.2,
        clip_range_value=0.2,
        vf_coef=0.1,
    )
    # pg: max(-1.5, -1.2) = -1.2 (clipped); max(-0.9, -0.9) = -0.9; max(0.5, 0.8) = 0.8 (clipped)
    pg = (-1.2 - 0.9 + 0.8) / 3
    # vf: token 0: max((1-0)^2, (0.7-0)^2) = 1; token 1: (0-1)^2 = 1; token 2: 0
    vf = 0.5 * (1.0 + 1.0 + 0.0) / 3
    assert stats["pg_loss"] == pytest.approx(pg, rel=1e-6)
    assert stats["vf_loss"] == pytest.approx(vf, rel=1e-6)
    assert loss.item() == pytest.approx(pg + 0.1 * vf, rel=1e-6)
    assert stats["clipfrac"] == pytest.approx(2 / 3)
    assert stats["vf_clipfrac"] == pytest.approx(0.0)
    kl = 0.5 * (math.log(1.5) ** 2 + math.log(0.9) ** 2 + math.log(0.5) ** 2) / 3
    assert stats["approx_kl"] == pytest.approx(kl, rel=1e-6)
    loss.backward()
    # Clipped tokens and the padded token get no policy gradient; token 1: d(-A r)/d logp = -0.9/3.
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, -0.3, 0.0, 0.0]]))
    assert values.grad[0, 3].item() == 0.0


def test_ppo_value_clip_active():
    # Value moved 1.0 from old but the return is far: clipped prediction has the larger error.
    z = torch.zeros(1, 1)
    loss, stats = ppo_loss(
        z,
        z,
        z,
        torch.tensor([[1.0]]),
        z,
        torch.tensor([[2.0]]),
        torch.ones(1, 1),
        clip_range_value=0.2,
        vf_coef=1.0,
    )
    assert stats["vf_loss"] == pytest.approx(0.5 * 1.8**2)
    assert stats["vf_clipfrac"] == pytest.approx(1.0)


def test_anchor_decision_thresholds():
    assert anchor_decision(0.75, 0.5, update_threshold=0.25) == "keep"  # exactly equal
    assert anchor_decision(0.75 + 1e-6, 0.5, update_threshold=0.25) == "update"
    assert anchor_decision(0.25, 0.5, rollback_threshold=0.25) == "keep"
    assert anchor_decision(0.25 - 1e-6, 0.5, rollback_threshold=0.25) == "rollback"
    # defaults 0.05 / 0.1, with decimal scores (float noise must not fire)
    assert anchor_decision(0.55, 0.50) == "keep"
    assert anchor_decision(0.551, 0.50) == "update"
    assert anchor_decision(0.50, 0.60) == "keep"
    assert anchor_decision(0.499, 0.60) == "rollback"
    assert anchor_decision(0.58, 0.60) == "keep"
    assert anchor_decision(0.62, 0.60) == "keep"


def test_copy_and_load_trainable_state_bit_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    state = copy_trainable_state(model)
    assert set(state) == {"0.bias", "1.weight", "1.bias"}
    originals = {k: v.clone() for k, v in state.items()}
    frozen_before = model[0].weight.detach().clone()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    assert not torch.equal(model[1].weight, state["1.weight"])  # the copy is independent
    torch.testing.assert_close(state["1.weight"], originals["1.weight"], rtol=0, atol=0)
    frozen_modified = model[0].weight.detach().clone()
    load_trainable_state(model, state)
    for name, p in model.named_parameters():
        if name in state:
            assert torch.equal(p, originals[name])
    assert torch.equal(model[0].weight, frozen_modified)  # frozen param untouched by load
    assert not torch.equal(model[0].weight, frozen_before)
    with pytest.raises(KeyError):
        load_trainable_state(model, {"nope": torch.zeros(1)})


def test_kl_controllers():
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    ctl.update(current_kl=12.0, n_steps=256)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 256 / 10000))
    before = ctl.value
    ctl.update(current_kl=5.4, n_steps=256)  # error -0.1 -> shrink
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 256 / 10000))
    assert ctl.value < before
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 256)
    assert fixed.value == 0.05
