"""A Llama-architecture transformers model written as one GGUF file, as llama.cpp names it.

llama.cpp, Ollama and LM Studio read GGUF: one file with the weights and everything needed to
run them (the architecture's sizes, RoPE, the tokenizer with its merges and special tokens, the
chat template). This module writes it with the ``gguf`` package (llama.cpp's own writer), in
the tensor names and metadata keys of llama.cpp's ``convert_hf_to_gguf.py`` for ``llama``:

- ``model.layers.N.self_attn.q_proj`` becomes ``blk.N.attn_q`` and so on (:func:`gguf_name`);
  the query and key weights are permuted from transformers' rotary layout (halves) to GGML's
  (interleaved pairs), as llama.cpp's converter does and transformers' GGUF loader undoes;
- 1-D tensors (the RMS norms) stay float32; 2-D ones are float16, or q8_0 (blocks of 32 int8
  with one float16 scale each: about half of f16's size, and close to it in quality);
- a tied output layer (SmolLM2's) is not written: llama.cpp reuses the token embeddings.

>>> gguf_name("model.layers.3.self_attn.q_proj.weight")
'blk.3.attn_q.weight'
>>> gguf_name("lm_head.weight")
'output.weight'
>>> import numpy as np
>>> permuted(np.arange(8).reshape(8, 1), heads=1)[:, 0].tolist()  # 4 pairs from 2 halves
[0, 4, 1, 5, 2, 6, 3, 7]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

Quant = Literal["f16", "q8_0"]
QUANTS: tuple[Quant, ...] = ("f16", "q8_0")
ARCHITECTURE = "llama"
NAMES = {  # transformers' Llama parameter names -> llama.cpp's (per layer after "blk.N.")
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(name: str) -> str:
    """llama.cpp's name of a transformers Llama parameter."""
    stem, kind = name.rsplit(".", 1)
    if stem in TOP_NAMES:
        return f"{TOP_NAMES[stem]}.{kind}"
    found = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", stem)
    if not found or found[2] not in NAMES:
        raise ValueError(f"{name}: not a parameter of a Llama model that GGUF can name")
    return f"blk.{found[1]}.{NAMES[found[2]]}.{kind}"


def permuted(weight: Any, heads: int) -> Any:
    """A query or key weight (rows: ``heads`` x head size) with each head's two rotary halves
    interleaved, the order GGML's RoPE reads (llama.cpp's ``permute``)."""
    rows = weight.shape[0]
    split = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
    return split.swapaxes(1, 2).reshape(weight.shape)


def tensor_data(name: str, weight: Any, config: Any, quant: Quant) -> tuple[Any, Any]:
    """``(array, GGML type)`` of one parameter as the file stores it."""
    import gguf
    import numpy as np

    data = weight.detach().float().cpu().numpy()
    if name.endswith("q_proj.weight"):
        data = permuted(data, config.num_attention_heads)
    elif name.endswith("k_proj.weight"):
        data = permuted(data, config.num_key_value_heads)
    if data.ndim == 1:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if quant == "q8_0":
        q8 = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data, q8), q8
    return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def add_architecture(writer: Any, config: Any, name: str, quant: Quant) -> None:
    """The sizes llama.cpp builds the graph from (``llama.*`` keys) and the file's type."""
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    theta = getattr(config, "rope_theta", None) or (config.rope_parameters or {}).get("rope_theta")
    writer.add_rope_freq_base(float(theta))
    writer.add_vocab_size(config.vocab_size)
    types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(types[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def add_tokenizer(writer: Any, tokenizer: Any, tokenizer_dir: Path, pre: str) -> None:
    """A byte-level BPE tokenizer (``gpt2`` in llama.cpp's terms): every token by id, its type
    (the added special tokens are control tokens), the merges, the special token ids and the
    chat template, read by ``gguf.SpecialVocab`` from the saved tokenizer folder."""
    import gguf

    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    special = set(tokenizer.all_special_ids)
    added = {i for i in tokenizer.added_tokens_decoder}
    tokens, types = [], []
    for i in range(len(by_id)):
        tokens.append(by_id[i])
        control = i in special or i in added
        types.append(gguf.TokenType.CONTROL if control else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_add_space_prefix(False)
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    vocab = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=len(tokens))
    vocab.add_to_gguf(writer, quiet=True)


def write_gguf(
    model: Any, tokenizer: Any, tokenizer_dir: Path, out: Path, quant: Quant, pre: str = "smollm"
) -> int:
    """Write ``model`` (a transformers Llama) and its tokenizer (saved in ``tokenizer_dir``,
    whose merges and chat template go in too) to the GGUF file ``out``; returns its tensors.

    ``pre`` is llama.cpp's name of the tokenizer's pre-tokenizer (SmolLM2's is ``smollm``)."""
    import gguf

    config = model.config
    if config.model_type != ARCHITECTURE:
        raise ValueError(f"a {config.model_type!r} model: GGUF export writes Llama models only")
    if quant not in QUANTS:
        raise ValueError(f"quant {quant!r}: one of {', '.join(QUANTS)}")
    writer = gguf.GGUFWriter(out, ARCHITECTURE)
    add_architecture(writer, config, Path(out).stem, quant)
    add_tokenizer(writer, tokenizer, tokenizer_dir, pre)
    tied = getattr(config, "tie_word_embeddings", False)
    count = 0
    for name, weight in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when there is no output.weight
        data, kind = tensor_data(name, weight, config, quant)
        writer.add_tensor(gguf_name(name), data, raw_dtype=kind)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return count
