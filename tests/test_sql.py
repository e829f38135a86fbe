import math

import pytest
import torch
from torch import nn

from stableprompt.algorithms.sql import apply_mask, polyak_update, soft_value, sql_loss


def consistent_batch(b: int = 3, t: int = 4, v: int = 6, seed: int = 0):
    """Q / Q' / actions / R that satisfy soft path consistency exactly (so the loss is 0).

    Pick log-probs l_t < 0 of the taken actions; set V'(s_{T-1}) = R - l_{T-1} and
    V'(s_t) = V'(s_{t+1}) - l_t; build target rows with those logsumexps and online rows whose
    log-softmax at a_t equals l_t.
    """
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(b, generator=g, dtype=torch.float64)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 2 - 0.05  # l_t in (-2.05, -0.05)
    v_tgt = torch.zeros(b, t, dtype=torch.float64)
    v_tgt[:, -1] = rewards - logp[:, -1]
    for s in reversed(range(t - 1)):
        v_tgt[:, s] = v_tgt[:, s + 1] - logp[:, s]
    raw = torch.randn(b, t, v, generator=g, dtype=torch.float64)
    q_target = raw - raw.logsumexp(-1, keepdim=True) + v_tgt[..., None]
    actions = torch.randint(0, v, (b, t), generator=g)
    q = torch.randn(b, t, v, generator=g, dtype=torch.float64)
    others = q.scatter(-1, actions[..., None], float("-inf")).logsumexp(-1)  # log sum_{a!=a_t}
    q_a = logp + others - torch.log1p(-torch.exp(logp))
    q = q.scatter(-1, actions[..., None], q_a[..., None])
    return q, q_target, actions, rewards


def test_consistent_q_gives_zero_loss_and_perturbation_positive():
    q, q_target, actions, rewards = consistent_batch()
    loss, stats = sql_loss(q, q_target, actions, rewards)
    assert loss.item() == pytest.approx(0.0, abs=1e-20)
    assert stats["loss_v2"] == pytest.approx(0.0, abs=1e-20)
    assert stats["loss_v3"] == pytest.approx(0.0, abs=1e-20)
    loss2, _ = sql_loss(q, q_target, actions, rewards + 0.1)
    assert loss2.item() > 1e-4
    q_pert = q.clone()
    q_pert[0, 1, 0] += 0.5
    loss3, _ = sql_loss(q_pert, q_target, actions, rewards)
    assert loss3.item() > 1e-4


def test_hand_computed_tiny_case():
    # B=1, T=2, V=2. q rows [0,0] and [ln3, 0]; both actions 0; target rows zeros; R = 1.
    q = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], requires_grad=True)
    q_target = torch.zeros(1, 2, 2)
    actions = torch.tensor([[0, 0]])
    rewards = torch.tensor([1.0])
    ln2 = math.log(2.0)
    a0, a1 = -ln2, math.log(0.75)  # A_t = log softmax of taken action
    v2 = [(a0 - (ln2 - ln2)) ** 2, (a1 - (1.0 - ln2)) ** 2]
    v3 = [((a0 + a1) - (1.0 - ln2)) ** 2, (a1 - (1.0 - ln2)) ** 2]
    expected = 0.5 * (sum(v2) + sum(v3)) / 2
    loss, stats = sql_loss(q, q_target, actions, rewards)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["loss_v2"] == pytest.approx(sum(v2) / 2, rel=1e-6)
    assert stats["loss_v3"] == pytest.approx(sum(v3) / 2, rel=1e-6)
    assert stats["q_mean"] == pytest.approx(math.log(3.0) / 2, rel=1e-6)
    assert stats["v_mean"] == pytest.approx((ln2 + math.log(4.0)) / 2, rel=1e-6)
    assert stats["a_mean"] == pytest.approx((a0 + a1) / 2, rel=1e-6)
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_target_gets_no_gradient():
    q, q_target, actions, rewards = consistent_batch(seed=1)
    q = q.clone().requires_grad_(True)
    q_target = q_target.clone().requires_grad_(True)
    loss, _ = sql_loss(q, q_target, actions, rewards + 1.0)
    loss.backward()
    assert q_target.grad is None
    assert q.grad.abs().sum().item() > 0


def test_mask_equals_dropping_tokens():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 3, 5, generator=g)
    qt = torch.randn(2, 3, 5, generator=g)
    keep = torch.tensor([True, False, True, True, False])
    actions = torch.tensor([[0, 2, 3], [3, 0, 2]])  # indices into the full vocab, all allowed
    small_actions = torch.tensor([[0, 1, 2], [2, 0, 1]])  # same tokens in the reduced vocab
    rewards = torch.tensor([0.3, -1.2])
    loss, _ = sql_loss(q, qt, actions, rewards, mask=keep)
    ref, _ = sql_loss(q[..., keep], qt[..., keep], small_actions, rewards)
    torch.testing.assert_close(loss, ref)
    assert torch.isfinite(soft_value(apply_mask(q, keep))).all()


def test_shape_errors():
    with pytest.raises(ValueError):
        sql_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 2), torch.zeros(1))
    with pytest.raises(ValueError):
        sql_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 3), torch.zeros(1))


def test_polyak_update_numbers():
    online, target = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        online.weight.fill_(1.0)
        online.bias.fill_(-2.0)
        target.weight.zero_()
        target.bias.fill_(2.0)
    polyak_update(target, online, tau=0.1)
    torch.testing.assert_close(target.weight, torch.full((1, 2), 0.1))
    torch.testing.assert_close(target.bias, torch.tensor([1.6]))
    polyak_update(target, online, tau=0.1)
    torch.testing.assert_close(target.weight, torch.full((1, 2), 0.19))
    torch.testing.assert_close(online.weight, torch.ones(1, 2))  # online untouched
    polyak_update(target, online, tau=1.0)
    torch.testing.assert_close(target.bias, torch.tensor([-2.0]))
    with pytest.raises(ValueError):
        polyak_update(target, online, tau=1.5)
