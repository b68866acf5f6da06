"""A Llama decoder in plain torch, for answering: transformers' logits without transformers.

`pgpt format` is a short process: most of it used to be start-up, and importing transformers
(its Llama, its caches, its generation machinery) is the largest part of that. Answering
greedily needs much less: the decoder's forward pass with a KV cache, which is what this
module is: RMSNorm, rotary positions, grouped-query attention and a SwiGLU MLP, with the
parameter names of transformers' ``LlamaForCausalLM`` (so ``backends.local.merge`` merges a
LoRA adapter into it the same way) and loaded straight from the folder's safetensors.

It takes the arguments ``backends.local.decode`` passes (ids, a 2-D attention mask of kept
columns, position ids, the cache) and returns the same logits as transformers' model in
fp32, to rounding (tests/test_llama.py). Only the plain Llama is covered: a folder whose
config asks for anything else (another architecture, scaled rotary positions, biases) is
not :func:`supported`, and loads through transformers as before.

>>> supported({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
True
>>> supported({"model_type": "llama", "rope_scaling": {"rope_type": "yarn"}})
False
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# config keys that change the computation from the plain Llama this module implements,
# with the value that keeps it plain
PLAIN = {"attention_bias": False, "mlp_bias": False, "rope_scaling": None, "hidden_act": "silu",
         "pretraining_tp": 1}  # fmt: skip


def supported(config: dict[str, Any]) -> bool:
    """True if a model folder's ``config.json`` (as a dict) is a Llama this module runs."""
    rope = config.get("rope_parameters") or {}
    return (
        config.get("model_type") == "llama"
        and all(config.get(key, plain) == plain for key, plain in PLAIN.items())
        and rope.get("rope_type", "default") == "default"
    )


@dataclass
class Config:
    """The shapes of a Llama, from its ``config.json``."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    head_dim: int = 0  # 0: hidden_size // num_attention_heads

    @classmethod
    def of(cls, found: dict[str, Any]) -> Config:
        """From a parsed ``config.json`` (rope_theta at the top or in ``rope_parameters``)."""
        names = cls.__dataclass_fields__
        kept = {key: value for key, value in found.items() if key in names and value is not None}
        theta = (found.get("rope_parameters") or {}).get("rope_theta")
        config = cls(**({**kept, "rope_theta": theta} if theta else kept))
        config.head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
        return config


@dataclass
class Layer:
    """One layer's cached keys and values: (batch, kv heads, columns, head dim)."""

    keys: Any = None
    values: Any = None


@dataclass
class Cache:
    """Keys and values of every column seen so far, per layer (transformers' layout)."""

    layers: list[Layer] = field(default_factory=list)

    def batch_select_indices(self, rows: Any) -> None:
        """Keep only the batch rows ``rows`` (finished rows leave the batch)."""
        for layer in self.layers:
            layer.keys, layer.values = layer.keys[rows], layer.values[rows]


class Linear(nn.Module):
    """``x @ weight.T`` without a bias; its weight is a placeholder until loaded (no random
    initialisation to pay for, which on the meta device would also import torch's compiler)."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(outputs, inputs, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Embedding(Linear):
    """Each token id's row of ``weight`` (tokens x size); a placeholder until loaded."""

    def __init__(self, tokens: int, size: int) -> None:
        super().__init__(size, tokens)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class RMSNorm(nn.Module):
    """x / rms(x) times a learnt scale."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size, device="meta"))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions, transformers' layout: the head's two halves are the pairs."""
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + turned * sin


class Attention(nn.Module):
    """Grouped-query self-attention over the cache and the new columns."""

    def __init__(self, c: Config) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = (
            c.num_attention_heads, c.num_key_value_heads, c.head_dim
        )  # fmt: skip
        self.q_proj = Linear(c.hidden_size, c.num_attention_heads * c.head_dim)
        self.k_proj = Linear(c.hidden_size, c.num_key_value_heads * c.head_dim)
        self.v_proj = Linear(c.hidden_size, c.num_key_value_heads * c.head_dim)
        self.o_proj = Linear(c.num_attention_heads * c.head_dim, c.hidden_size)

    def forward(self, x: torch.Tensor, rope: tuple, bias: torch.Tensor, cached: Layer) -> Any:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotate(q, *rope), rotate(k, *rope)
        if cached.keys is not None:
            k, v = torch.cat([cached.keys, k], dim=2), torch.cat([cached.values, v], dim=2)
        cached.keys, cached.values = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, c: Config) -> None:
        super().__init__()
        self.gate_proj = Linear(c.hidden_size, c.intermediate_size)
        self.up_proj = Linear(c.hidden_size, c.intermediate_size)
        self.down_proj = Linear(c.intermediate_size, c.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm attention, then pre-norm MLP, each added to the residual stream."""

    def __init__(self, c: Config) -> None:
        super().__init__()
        self.self_attn, self.mlp = Attention(c), MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: tuple, bias: torch.Tensor, cached: Layer) -> Any:
        x = x + self.self_attn(self.input_layernorm(x), rope, bias, cached)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """The embedding, the layers and the final norm (transformers' ``model.model``)."""

    def __init__(self, c: Config) -> None:
        super().__init__()
        self.embed_tokens = Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class Llama(nn.Module):
    """A causal Llama with an LM head; ``model(input_ids=..., ...).logits`` as transformers'."""

    def __init__(self, c: Config) -> None:
        super().__init__()
        self.config = c
        self.model = Decoder(c)
        self.lm_head = Linear(c.hidden_size, c.vocab_size)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        half = torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim
        self.register_buffer("inv_freq", 1.0 / (c.rope_theta**half), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def new_cache(self) -> Cache:
        """An empty KV cache for :meth:`forward`."""
        return Cache([Layer() for _ in self.model.layers])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Cache,
        logits_to_keep: int = 0,
        **_: Any,
    ) -> SimpleNamespace:
        """Logits of the new columns ``input_ids`` (the last ``logits_to_keep``, 0: all).

        ``attention_mask``: (batch, cached + new columns), 1 where a column is kept: a new
        column sees the kept columns up to itself. ``cache`` grows by the new columns.
        """
        t = input_ids.shape[1]
        total = attention_mask.shape[1]
        causal = torch.ones(t, total, dtype=torch.bool, device=input_ids.device).tril(total - t)
        allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
        # a finite floor, not -inf: a row with nothing to see (left padding) stays finite
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=input_ids.device)
        bias = bias.masked_fill(~allowed, torch.finfo(torch.float32).min)
        angles = position_ids[..., None].float() * self.inv_freq
        angles = torch.cat((angles, angles), dim=-1)[:, None]  # (batch, 1, new, head dim)
        rope = (angles.cos(), angles.sin())
        x = self.model.embed_tokens(input_ids)
        for layer, cached in zip(self.model.layers, cache.layers, strict=True):
            x = layer(x, rope, bias, cached)
        x = self.model.norm(x[:, -logits_to_keep:] if logits_to_keep else x)
        return SimpleNamespace(logits=self.lm_head(x))


DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as fp32, read in one pass into one buffer they share.

    Not safetensors' own ``load_file``: it maps the file, and writing to mapped pages (merging
    an adapter) copies them one 4 KiB page at a time, several times slower than reading the
    file once; copying them out instead holds the weights twice at the peak.
    """
    with open(path, "rb") as file:
        entries = header(file)
        data = torch.empty(path.stat().st_size - file.tell(), dtype=torch.uint8)
        file.readinto(memoryview(data.numpy()))
    tensors = {}
    for name, entry in entries.items():
        start, end = entry["data_offsets"]
        raw = data[start:end].view(DTYPES[entry["dtype"]]).view(entry["shape"])
        tensors[name] = raw.float()  # fp32 stays a view of the buffer; others convert
    return tensors


def header(file: Any) -> dict[str, Any]:
    """A safetensors file's tensor entries (dtype, shape, data offsets), read from its start."""
    (size,) = struct.unpack("<Q", file.read(8))
    return {k: v for k, v in json.loads(file.read(size)).items() if k != "__metadata__"}


def readable(path: Path) -> bool:
    """True if :func:`read_safetensors` reads every tensor of the file at ``path``."""
    with open(path, "rb") as file:
        return all(entry["dtype"] in DTYPES for entry in header(file).values())


def load_llama(folder: Path) -> Llama:
    """The Llama in ``folder`` (config.json and model.safetensors), fp32, eval mode."""
    config = Config.of(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")))
    model = Llama(config)
    weights = read_safetensors(Path(folder) / "model.safetensors")
    if config.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    model.load_state_dict(weights, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"{folder}: model.safetensors lacks {missing[0]} (and maybe more)")
    return model.eval()
