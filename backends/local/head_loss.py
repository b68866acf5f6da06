"""Cross-entropy through the LM head, a few rows at a time, with its gradient made on the way.

Training needs, at each target position, the cross-entropy of the vocabulary logits
``hidden @ head.T``. Done the plain way (``F.cross_entropy(head(hidden), targets)``) it builds
a rows x vocabulary float matrix of logits, one of log-probabilities, and in the backward pass
a zero-filled one and one of gradients: for SmolLM2 (49,152 tokens) 200 KB a row each, each
written once, read once and freed, on fresh pages from the OS when it is large. Here the rows
go through in chunks of at most ``CHUNK_ROWS``: a chunk's logits become its softmax in place,
then its gradient for the logits (``softmax - onehot``) in place too, and the chunk's gradient
for ``hidden`` (``that @ head``: rows x hidden size, small) is kept for the backward pass,
which only scales it. One matrix a chunk instead of four for all rows; the same loss and
gradients, to rounding.

>>> import torch
>>> hidden, head = torch.randn(5, 8, requires_grad=True), torch.randn(11, 8)
>>> targets = torch.tensor([3, 0, 10, 3, 7])
>>> fused = head_loss(hidden, head, targets)
>>> plain = torch.nn.functional.cross_entropy(hidden @ head.T, targets, reduction="sum")
>>> bool(torch.allclose(fused, plain))
True
"""

from __future__ import annotations

from functools import cache
from typing import Any

CHUNK_ROWS = 256  # target positions a pass: 256 x 49,152 fp32 logits = 50 MB


def head_loss(hidden: Any, head: Any, targets: Any, weights: Any = None) -> Any:
    """Sum over rows of ``weights[i] * cross_entropy(hidden[i] @ head.T, targets[i])``.

    ``hidden``: (rows, h) floats; ``head``: (vocabulary, h), the LM head's weight;
    ``targets``: (rows,) token ids; ``weights``: (rows,) or None (all 1). A scalar tensor
    with autograd to ``hidden`` (and to ``head`` if it requires grad).
    """
    import torch

    if torch.is_grad_enabled() and (hidden.requires_grad or head.requires_grad):
        return head_loss_function().apply(hidden, head, targets, weights)
    return chunked(hidden, head, targets, weights, need_hidden=False, need_head=False)[0]


def chunked(
    hidden: Any, head: Any, targets: Any, weights: Any, *, need_hidden: bool, need_head: bool
) -> tuple[Any, Any, Any]:
    """(loss sum, gradient for ``hidden`` or None, for ``head`` or None), chunk by chunk."""
    import torch

    total = torch.zeros((), dtype=loss_dtype(hidden.dtype), device=hidden.device)
    grad_hidden = torch.empty_like(hidden) if need_hidden else None
    grad_head = torch.zeros_like(head) if need_head else None
    need_grad = need_hidden or need_head
    for start in range(0, len(targets), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        part = None if weights is None else weights[rows]
        loss, probs = chunk_pass(hidden[rows], head, targets[rows], part, need_grad)
        total += loss
        if grad_hidden is not None:
            grad_hidden[rows] = probs @ head
        if grad_head is not None:
            grad_head += probs.T @ hidden[rows]
    return total, grad_hidden, grad_head


def chunk_pass(
    hidden: Any, head: Any, targets: Any, weights: Any, need_grad: bool
) -> tuple[Any, Any]:
    """(loss sum, gradient for the logits or None) of one chunk of rows.

    The gradient for the logits, ``weights * (softmax - onehot)``, is made in the logits'
    own memory.
    """
    import torch

    logits = hidden @ head.T
    logits = logits.to(loss_dtype(logits.dtype))
    rows = torch.arange(len(targets), device=targets.device)
    logits.sub_(logits.amax(dim=1, keepdim=True))  # shifted: exp cannot overflow
    picked = logits[rows, targets]  # a copy (advanced indexing)
    probs = logits.exp_()  # in place: the logits are not needed again
    total = probs.sum(dim=1, keepdim=True)
    losses = total.squeeze(1).log() - picked  # log-sum-exp - the target's logit
    if weights is not None:
        losses = losses * weights
    if not need_grad:
        return losses.sum(), None
    probs.div_(total)
    probs[rows, targets] -= 1.0
    if weights is not None:
        probs.mul_(weights.unsqueeze(1))
    return losses.sum(), probs.to(hidden.dtype)


def loss_dtype(dtype: Any) -> Any:
    """The dtype the softmax runs in: at least float32 (a bf16 model's logits are upcast)."""
    import torch

    return torch.promote_types(dtype, torch.float32)


@cache
def head_loss_function() -> type:
    """``HeadLoss``: the autograd function of :func:`head_loss` (a lazy class: torch)."""
    import torch

    class HeadLoss(torch.autograd.Function):
        """Forward makes the loss and the gradients chunk by chunk; backward scales them."""

        @staticmethod
        def forward(ctx: Any, hidden: Any, head: Any, targets: Any, weights: Any) -> Any:
            total, grad_hidden, grad_head = chunked(
                hidden,
                head,
                targets,
                weights,
                need_hidden=ctx.needs_input_grad[0],
                need_head=ctx.needs_input_grad[1],
            )
            ctx.save_for_backward(grad_hidden, grad_head)
            return total

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, Any, None, None]:
            grad_hidden, grad_head = ctx.saved_tensors
            return (
                None if grad_hidden is None else grad_hidden * grad.to(grad_hidden.dtype),
                None if grad_head is None else grad_head * grad.to(grad_head.dtype),
                None,
                None,
            )

    return HeadLoss
