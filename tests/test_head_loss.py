"""The LM head's cross-entropy in chunks: the plain loss and gradients, to rounding."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from backends.local import head_loss as head_loss_module  # noqa: E402
from backends.local.head_loss import head_loss  # noqa: E402


def _case(rows: int = 7, vocab: int = 13, width: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    head = torch.randn(vocab, width, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    weights = torch.rand(rows, generator=generator, dtype=torch.float64) * 3
    return hidden, head, targets, weights


def _plain(hidden, head, targets, weights):
    losses = F.cross_entropy(hidden @ head.T, targets, reduction="none")
    return (losses * weights).sum() if weights is not None else losses.sum()


def _grads(loss_fn, hidden, head, targets, weights, head_grad: bool):
    x = hidden.clone().requires_grad_()
    w = head.clone().requires_grad_(head_grad)
    loss = loss_fn(x, w, targets, weights)
    (loss * 1.5).backward()  # a scale on the way back, as the step's 1 / total weight is
    return loss.detach(), x.grad, w.grad


@pytest.mark.parametrize("chunk_rows", [1, 3, 256])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradients_are_the_plain_ones(monkeypatch, chunk_rows, weighted) -> None:
    """Every chunking, weighted or not: the loss and the gradients of hidden and head."""
    monkeypatch.setattr(head_loss_module, "CHUNK_ROWS", chunk_rows)
    hidden, head, targets, weights = _case()
    weights = weights if weighted else None
    fused = _grads(head_loss, hidden, head, targets, weights, head_grad=True)
    plain = _grads(_plain, hidden, head, targets, weights, head_grad=True)
    for ours, reference in zip(fused, plain, strict=True):
        assert torch.allclose(ours, reference, rtol=1e-10, atol=1e-12)


def test_a_frozen_head_gets_no_gradient() -> None:
    hidden, head, targets, _ = _case()
    _, grad_hidden, grad_head = _grads(head_loss, hidden, head, targets, None, head_grad=False)
    assert grad_head is None
    assert torch.allclose(grad_hidden, _grads(_plain, hidden, head, targets, None, False)[1])


def test_without_grad_it_is_the_same_loss() -> None:
    """evaluate() runs under no_grad: the loss alone, the same number."""
    hidden, head, targets, weights = _case(seed=3)
    with torch.no_grad():
        loss = head_loss(hidden, head, targets, weights)
    assert loss.requires_grad is False
    assert loss.item() == pytest.approx(_plain(hidden, head, targets, weights).item(), rel=1e-12)


def test_a_target_far_below_the_top_logit_is_a_finite_loss() -> None:
    """exp(target - top) underflows to 0 in fp32: the loss stays logsumexp - logit, not inf."""
    hidden = torch.tensor([[1.0, 0.0]])
    head = torch.tensor([[200.0, 0.0], [-200.0, 0.0], [0.0, 1.0]])  # logits 200, -200, 0
    loss = head_loss(hidden, head, torch.tensor([1]))
    assert loss.item() == pytest.approx(400.0)
    assert loss.item() == pytest.approx(_plain(hidden, head, torch.tensor([1]), None).item())
