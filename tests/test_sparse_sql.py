import math

import pytest
import torch

from stableprompt.algorithms.sparse_sql import (
    apply_mask,
    mc_loss,
    sample_sparsemax,
    sparse_sql_loss,
    sparsemax,
    spmax,
    topk_mask,
)
from stableprompt.algorithms.sql import sql_loss
from stableprompt.models.sampling import sample_index


def project_simplex_bisection(z: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Brute force: find tau with sum(max(z - tau, 0)) = 1 by bisection (float64)."""
    lo, hi = z.min().item() - 1.0, z.max().item()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if torch.clamp(z - mid, min=0).sum().item() > 1.0:
            lo = mid
        else:
            hi = mid
    return torch.clamp(z - 0.5 * (lo + hi), min=0)


def tsallis_objective(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (p * z).sum(-1) + 0.5 * (1 - (p**2).sum(-1))


def test_sparsemax_is_simplex_projection():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(2, 9, (1,), generator=g))
        z = torch.randn(n, generator=g, dtype=torch.float64) * 2
        p = sparsemax(z)
        assert torch.all(p >= 0)
        assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(p, project_simplex_bisection(z), atol=1e-10, rtol=0)


def test_sparsemax_hand_values_and_batching():
    z = torch.tensor([[1.0, 0.5, -5.0], [1.0, 0.0, -5.0], [0.0, 0.0, 0.0]])
    expected = torch.tensor([[0.75, 0.25, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(sparsemax(z), expected)
    # dim argument
    torch.testing.assert_close(sparsemax(z.T, dim=0), expected.T)


def test_spmax_hand_value_and_variational_form():
    assert spmax(torch.tensor([1.0, 0.5, -5.0])).item() == pytest.approx(1.0625)
    assert spmax(torch.tensor([1.0, 0.0, -5.0])).item() == pytest.approx(1.0)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20, 6, generator=g, dtype=torch.float64) * 3
    value = spmax(z)
    torch.testing.assert_close(value, tsallis_objective(sparsemax(z), z))
    # It's the max over the simplex: random points (Dirichlet + vertices) never beat it.
    dirichlet = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64))
    for _ in range(200):
        p = dirichlet.sample((20,))
        assert torch.all(tsallis_objective(p, z) <= value + 1e-12)
    for i in range(6):
        p = torch.nn.functional.one_hot(torch.tensor(i), 6).double()
        assert torch.all(tsallis_objective(p, z) <= value + 1e-12)


def test_masked_entries_get_zero_probability_and_finite_values():
    z = torch.tensor([[3.0, 2.9, 2.8, 2.7, 0.0]])
    mask = torch.tensor([[True, False, True, False, True]])
    zm = apply_mask(z, mask)
    p = sparsemax(zm)
    assert p[0, 1].item() == 0.0 and p[0, 3].item() == 0.0
    # equals sparsemax over the allowed entries only
    torch.testing.assert_close(p[mask], sparsemax(z[mask]))
    torch.testing.assert_close(spmax(zm), spmax(z[mask]).unsqueeze(0))
    # -inf masking also works (no NaN)
    zinf = z.masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(sparsemax(zinf), p)
    assert torch.isfinite(spmax(zinf)).all()


def test_spmax_gradient_is_sparsemax_and_finite_with_mask():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 7, generator=g, dtype=torch.float64, requires_grad=True)
    spmax(z).sum().backward()
    torch.testing.assert_close(z.grad, sparsemax(z.detach()))

    z2 = torch.randn(2, 5, generator=g, requires_grad=True)
    mask = torch.tensor([True, True, False, True, False])
    spmax(apply_mask(z2, mask)).sum().backward()
    assert torch.isfinite(z2.grad).all()
    assert torch.all(z2.grad[:, ~mask] == 0)
    torch.testing.assert_close(z2.grad.sum(-1), torch.ones(2))


def test_sampling_stays_in_support():
    q = torch.tensor([[2.0, 1.8, -1.0, 0.0, 1.5], [0.0, 0.0, 5.0, 0.0, 0.0]])
    support = sparsemax(q) > 0
    assert support.sum().item() < q.numel()
    g = torch.Generator().manual_seed(3)
    samples = sample_sparsemax(q.unsqueeze(1).expand(2, 4000, 5), generator=g)  # [2, 4000]
    assert samples.shape == (2, 4000)
    for b in range(2):
        assert support[b, samples[b]].all()
    assert torch.all(samples[1] == 2)
    # empirical frequencies match sparsemax probabilities
    freq = torch.bincount(samples[0], minlength=5).float() / 4000
    torch.testing.assert_close(freq, sparsemax(q[0]), atol=0.03, rtol=0)


def test_topk_mask():
    logits = torch.tensor([[0.1, 5.0, -1.0, 3.0], [4.0, 3.0, 2.0, 1.0]])
    mask = topk_mask(logits, 2)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[False, True, False, True], [True, True, False, False]]
    with pytest.raises(ValueError):
        topk_mask(logits, 5)


def test_sparse_sql_loss_hand_value():
    # T=1: spmax([1, 0.5, masked]) = 1.0625, A = 0.5 - 1.0625; target R - V' = 2 - 1.0625.
    q = torch.tensor([[[1.0, 0.5, 7.0]]], requires_grad=True)
    mask = torch.tensor([[[True, True, False]]])
    loss, stats = sparse_sql_loss(
        q, q.detach().clone(), torch.tensor([[1]]), torch.tensor([2.0]), mask
    )
    assert loss.item() == pytest.approx(1.5**2)
    assert stats["loss_v2"] == pytest.approx(2.25) and stats["loss_v3"] == pytest.approx(2.25)
    loss.backward()
    assert q.grad[0, 0, 2].item() == 0.0


def test_sparse_sql_loss_matches_generic_sql_loss():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(3, 4, 10, generator=g)
    qt = torch.randn(3, 4, 10, generator=g)
    base = torch.randn(3, 4, 10, generator=g)
    mask = topk_mask(base, 4)
    actions = base.argmax(-1)
    rewards = torch.randn(3, generator=g)
    loss, _ = sparse_sql_loss(q, qt, actions, rewards, mask)
    ref, _ = sql_loss(apply_mask(q, mask), apply_mask(qt, mask), actions, rewards, value_fn=spmax)
    torch.testing.assert_close(loss, ref)
    assert math.isfinite(loss.item())


def test_mc_loss_hand_value():
    q = torch.tensor([[[1.0, 3.0], [0.0, -2.0]], [[0.5, 0.0], [2.0, 2.0]]], requires_grad=True)
    actions = torch.tensor([[1, 0], [0, 1]])
    rewards = torch.tensor([1.0, -1.0])
    loss, stats = mc_loss(q, actions, rewards)
    # Q(s,a): [[3, 0], [0.5, 2]] vs R: [[1, 1], [-1, -1]] -> (4 + 1 + 2.25 + 9) / 4
    assert loss.item() == pytest.approx(16.25 / 4)
    assert stats["q_mean"] == pytest.approx(5.5 / 4)
    loss.backward()
    assert q.grad[0, 0, 0].item() == 0.0  # untaken action gets no gradient
    assert q.grad[0, 0, 1].item() == pytest.approx(2 * (3 - 1) / 4)


def test_sample_index_draws_in_proportion_and_never_a_zero(monkeypatch):
    """The inverse-CDF sampler every agent uses instead of torch.multinomial: frequencies match
    the probabilities (rows unnormalised, any batch shape), zeros (sparsemax's outside, the
    trailing vocabulary) are never drawn, and a generator makes the draws repeat."""
    probs = torch.tensor([[0.2, 0.0, 1.2, 0.6, 0.0], [0.0, 0.0, 0.0, 3.0, 0.0]])
    draws = torch.stack(
        [sample_index(probs.expand(3, 2, 5), torch.Generator().manual_seed(i)) for i in range(4000)]
    )  # [4000, 3, 2]
    assert draws.shape == (4000, 3, 2)
    first = torch.bincount(draws[:, :, 0].flatten(), minlength=5).float() / draws[:, :, 0].numel()
    torch.testing.assert_close(first, torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0]), atol=0.02, rtol=0)
    assert (draws[:, :, 1] == 3).all()
    assert not ((draws == 1) | (draws == 4)).any()  # the zeros, inside and at the end
    again = sample_index(probs, torch.Generator().manual_seed(7))
    assert torch.equal(again, sample_index(probs, torch.Generator().manual_seed(7)))
    # a uniform that rounds up to the total lands past the last nonzero entry: kept on it
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.ones(shape, dtype=kw["dtype"]))
    assert sample_index(probs).tolist() == [3, 3]
