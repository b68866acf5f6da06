"""The model a run trains and one optimizer step of it: the LoRA adapter, fast dropout, AdamW and
its schedule, the loss over target tokens (weighted where the Markdown departs from the input).
"""

from __future__ import annotations

import math
import random
from functools import cache
from pathlib import Path
from typing import Any

from backends.local.data import (
    IGNORE,
    collate,
)
from backends.local.plan import MAX_GRAD_NORM, lr_factor, thread_count
from config.settings import FinetuneSettings

# --- model and steps ------------------------------------------------------------------------


def build_model(base_dir: str | Path, settings: FinetuneSettings) -> tuple[Any, Any]:
    """The base model wrapped with a fresh LoRA adapter (seeded init), and its tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model

    from backends.local.device import pick_device
    from backends.local.model import load_model, quiet_peft

    threads = thread_count(settings.threads)
    model, tokenizer = load_model(base_dir, threads=threads, device=pick_device(settings.device))
    torch.set_num_threads(threads)
    seed_everything(settings.seed)
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    with quiet_peft():
        model = get_peft_model(model, config)
    use_fast_dropout(model)
    model.eval()
    return model, tokenizer


@cache
def fast_dropout_class() -> type:
    """``FastDropout``: ``nn.Dropout`` with a quarter of the random draws (a lazy class)."""
    import torch

    class FastDropout(torch.nn.Module):
        """Dropout whose keep mask comes from 16-bit slices of 64-bit random integers.

        ``nn.Dropout`` draws one random number per element, which on a CPU costs as much as
        the LoRA matmuls it feeds (~17% of a SmolLM2 step); one 64-bit draw per 4 elements
        is ~4x cheaper. ``p`` is rounded to a multiple of 1/65536; the scale is exact.
        """

        def __init__(self, p: float) -> None:
            super().__init__()
            if not 0.0 <= p < 1.0:
                raise ValueError(f"dropout probability must be in [0, 1), not {p}")
            self.p = p
            self.threshold = round(p * 65536) - 32768  # keep where int16 bits >= threshold

        def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
            """A fresh bool mask of the elements of ``x`` to keep (the global torch RNG)."""
            n = x.numel()
            bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), device=x.device)
            return bits.view(torch.int16)[:n].view(x.shape) >= self.threshold

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or self.p == 0.0:
                return x
            return x * self.keep_mask(x).to(x.dtype).mul_(1.0 / (1.0 - self.p))

        def extra_repr(self) -> str:
            return f"p={self.p}"

    return FastDropout


@cache
def dropout_linear_class() -> type:
    """``DropoutLinear``: a LoRA ``A`` matrix with its dropout inside (a lazy class).

    PEFT computes ``lora_B(lora_A(dropout(x)))``: autograd then keeps, for every adapted
    layer, the dropped copy of ``x`` (for ``A``'s gradient) and the float keep mask (for
    ``x``'s): 2 floats per input element, 7 layers a block, ~4,900 floats a token in each of
    SmolLM2's 30 blocks, a third of the training's activation memory. ``DropoutLinear`` keeps
    ``x`` itself (q, k and v share one input, gate and up another, so one copy serves several
    layers) and a bool mask (1 byte), and recomputes the dropped copy in the backward pass:
    one ``torch.where``. Same mask draws as ``FastDropout`` (its ``dropout`` child), so the
    same numbers as the unfused layers, to rounding.
    """
    import torch
    import torch.nn.functional as F

    class DropoutMatmul(torch.autograd.Function):
        """``(x * keep * scale) @ weight.T`` that saves ``x`` and the bool ``keep`` only.

        One pass over ``x``-sized data for the dropout (``torch.where`` on the bool mask) in
        the forward pass and one for each gradient; ``scale`` multiplies the rank-wide side
        (``r`` columns, not ``x``'s ``in_features``).
        """

        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, keep: Any, scale: float) -> Any:
            ctx.save_for_backward(x, weight, keep)
            ctx.scale = scale
            return F.linear(torch.where(keep, x, 0.0), weight).mul_(scale)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, Any, None, None]:
            x, weight, keep = ctx.saved_tensors
            grad = grad * ctx.scale
            grad_x = grad_w = None
            if ctx.needs_input_grad[0]:
                grad_x = torch.where(keep, grad @ weight, 0.0)
            if ctx.needs_input_grad[1]:
                dropped = torch.where(keep, x, 0.0).reshape(-1, x.shape[-1])
                grad_w = grad.reshape(-1, grad.shape[-1]).T @ dropped
            return grad_x, grad_w, None, None

    class DropoutLinear(torch.nn.Linear):
        """``Linear(dropout(x))`` (no bias), holding the weight of the ``nn.Linear`` it replaces."""

        def __init__(self, linear: torch.nn.Linear, p: float) -> None:
            super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")
            self.weight = linear.weight  # the same Parameter: state dict keys are unchanged
            self.dropout = fast_dropout_class()(p)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = self.dropout.p
            if not self.training or p == 0.0:
                return F.linear(x, self.weight)
            keep = self.dropout.keep_mask(x)
            return DropoutMatmul.apply(x, self.weight, keep, 1.0 / (1.0 - p))

    return DropoutLinear


def use_fast_dropout(model: Any) -> int:
    """Fuse each LoRA layer's dropout (p > 0) into its ``A`` matrix; how many fused.

    ``lora_dropout[name]`` becomes ``nn.Identity`` and ``lora_A[name]`` a ``DropoutLinear``
    (a ``FastDropout`` of the same p inside) holding the same weight, so PEFT's forward,
    state dict, saving and merging are unchanged.
    """
    import torch

    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        a_matrices = getattr(module, "lora_A", None)
        if isinstance(dropouts, torch.nn.ModuleDict) and isinstance(
            a_matrices, torch.nn.ModuleDict
        ):
            for name, dropout in dropouts.items():
                linear = dict(a_matrices.items()).get(name)
                fusable = type(linear) is torch.nn.Linear and linear.bias is None
                if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0 and fusable:
                    a_matrices[name] = dropout_linear_class()(linear, dropout.p)
                    dropouts[name] = torch.nn.Identity()
                    swapped += 1
    return swapped


def seed_everything(seed: int) -> None:
    """Seed torch and Python's ``random`` (LoRA init, dropout)."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def pad_id(tokenizer: Any) -> int:
    """Id to pad with (labels and attention mask hide it anyway): pad, else EOS, else 0."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    return 0


def trainable_parameters(model: Any) -> list[Any]:
    """The parameters that require grad: the LoRA adapter's only."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: Any, settings: FinetuneSettings) -> Any:
    """AdamW over the trainable (LoRA) parameters only."""
    import torch

    return torch.optim.AdamW(
        trainable_parameters(model),
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )


def make_scheduler(optimizer: Any, total_steps: int, warmup_ratio: float) -> Any:
    """``LambdaLR`` with ``lr_factor``: warm-up over ``ceil(ratio * total)`` steps, then cosine."""
    import torch

    warmup = math.ceil(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup)
    )


def target_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """(sum of the cross-entropies at the target positions, number of target positions).

    Runs the decoder, then the LM head on the target positions only (position t predicts
    token t + 1), which saves the vocabulary projection of every other position, a few
    positions at a time (``backends.local.head_loss``). A batch with ``weights`` sums each
    cross-entropy times its label's weight.
    """
    from backends.local.head_loss import head_loss

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    batch = {name: tensor.to(base.device) for name, tensor in batch.items()}  # CPU: itself
    hidden = base.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    head = base.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("target_loss: an LM head with a bias is not supported")
    weights = batch["weights"][:, 1:][keep] if "weights" in batch else None
    return head_loss(hidden[:, :-1][keep], head.weight, targets[keep], weights), int(keep.sum())


def target_weight(batch: dict[str, Any]) -> float:
    """What a batch's summed loss is divided by: its targets' weights, or their count."""
    if "weights" in batch:
        return float(batch["weights"][:, 1:].sum())
    return float((batch["labels"][:, 1:] != IGNORE).sum())


def accumulate_gradients(model: Any, micro_batches: list[dict[str, Any]]) -> tuple[float, int]:
    """Backward of the mean loss over all target tokens of ``micro_batches``; (mean, count).

    Each micro-batch's summed loss is divided by the step's total target weight (the target
    count, unless the batches carry loss weights), so the accumulated gradient equals that of
    one batch holding every micro-batch.
    """
    total = sum(target_weight(b) for b in micro_batches)
    loss_sum, n_target = 0.0, 0
    for batch in micro_batches:
        loss, count = target_loss(model, batch)
        (loss / total).backward()
        loss_sum, n_target = loss_sum + loss.item(), n_target + count
    return loss_sum / total, n_target


def train_step(
    model: Any, optimizer: Any, scheduler: Any, micro_batches: list[dict[str, Any]]
) -> dict[str, float]:
    """One optimizer step over ``micro_batches`` (train mode only for its duration)."""
    import torch

    lr = optimizer.param_groups[0]["lr"]
    model.train()
    try:
        loss, n_target = accumulate_gradients(model, micro_batches)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable_parameters(model), MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    finally:
        model.eval()
    tokens = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    return {
        "loss": loss,
        "n_target": n_target,
        "tokens": tokens,
        "grad_norm": float(grad_norm),
        "lr": lr,
    }


def evaluate(model: Any, examples: list[dict[str, Any]], batch_size: int, pad: int) -> float:
    """Target-token-weighted mean loss over ``examples`` (eval mode, no grad)."""
    import torch

    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = collate([examples[i] for i in order[start : start + batch_size]], pad)
            loss, n = target_loss(model, batch)
            total, count = total + loss.item(), count + n
    return total / count
