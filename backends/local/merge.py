"""A LoRA adapter merged into its base model's weights, without loading PEFT.

Answering with a fine-tune needs the base weights plus each adapted layer's low-rank update
``W += (B @ A) * alpha / r``. PEFT's ``merge_and_unload`` does that after wrapping every
layer, which costs a ``pgpt format`` more than the merge itself (importing PEFT, building
210 wrapper modules, copying weights). Here the update is added in place, in the order PEFT
computes it, so the merged weights are PEFT's bit for bit. An adapter this does not cover
(DoRA, rsLoRA, per-layer ranks, extra trained modules, no safetensors file) goes through
PEFT as before.

>>> plain_lora({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "use_dora": False})
True
>>> plain_lora({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "use_dora": True})
False
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PEFT's name for the wrapped model in the adapter's keys
# settings under which the update is not the plain (B @ A) * alpha / r of every target layer
UNCOVERED = ("use_dora", "use_rslora", "fan_in_fan_out", "rank_pattern", "alpha_pattern",
             "modules_to_save", "layer_replication", "trainable_token_indices", "lora_bias",
             "target_parameters")  # fmt: skip


def plain_lora(config: dict[str, Any]) -> bool:
    """True if ``adapter_config.json``'s ``config`` is a LoRA this module merges exactly."""
    return config.get("peft_type") == "LORA" and not any(config.get(k) for k in UNCOVERED)


def merge_adapter(model: Any, adapter: Path) -> bool:
    """Add ``adapter``'s LoRA updates to ``model``'s weights in place; False (untouched) if it
    is not a plain LoRA in safetensors, for PEFT to merge."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    if not plain_lora(config) or not (adapter / WEIGHTS).is_file():
        return False
    scale = config["lora_alpha"] / config["r"]
    tensors = load_file(adapter / WEIGHTS)
    updates = []
    for key in tensors:
        if key.endswith(".lora_A.weight"):
            name = key.removeprefix(PREFIX).removesuffix(".lora_A.weight")
            down, up = tensors[key], tensors[f"{PREFIX}{name}.lora_B.weight"]
            updates.append((model.get_submodule(name), up, down))
    if len(updates) * 2 != len(tensors):
        return False  # keys this module does not know: leave it to PEFT
    with torch.no_grad():
        for layer, up, down in updates:
            layer.weight += (up @ down) * scale  # PEFT's get_delta_weight, then +=
    return True
