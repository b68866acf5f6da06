"""The light model (backends/local/llama.py, backends/local/tokenizer.py) answers as transformers'.

`pgpt format` loads it to start quickly; it must give the tokens transformers' model gives:
the same tokenizer ids, chat prompt and decoded text, logits to rounding on a left-padded
batch, token-identical greedy and faithful answers (copying ahead or not, batched or not),
the same weights after merging a LoRA adapter, and transformers' model where it does not
cover the folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_decode import TEXTS

from backends.local.generate import generate, load_for_inference
from backends.local.model import load_model

from tinymodel import chat

SAMPLES = [*TEXTS, "Ünïcödé — “quotes” and emoji 🙂\n\n\ttabs", "<|im_end|> in the text"]


@pytest.fixture(scope="module")
def both(tiny_model: Path):
    """The tiny model loaded by transformers and by the light loader."""
    return load_model(tiny_model, threads=1), load_model(tiny_model, threads=1, light=True)


def test_the_light_loader_skips_transformers(both) -> None:
    (hf, _), (light, tokenizer) = both
    assert hasattr(hf, "generate") and not hasattr(light, "generate")
    assert type(tokenizer).__module__ == "backends.local.tokenizer"


def test_the_tokenizer_gives_transformers_ids_prompt_and_text(both) -> None:
    (_, theirs), (_, ours) = both
    for text in SAMPLES:
        ids = theirs(text, add_special_tokens=False)["input_ids"]
        assert ours(text, add_special_tokens=False)["input_ids"] == ids
        for skip in (True, False):
            assert ours.batch_decode([ids], skip_special_tokens=skip) == theirs.batch_decode(
                [ids], skip_special_tokens=skip
            )
        conversation = chat(text)
        for prompt in (True, False):
            assert ours.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=prompt
            ) == theirs.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=prompt
            )
    assert ours.get_vocab() == theirs.get_vocab() and len(ours) == len(theirs)
    assert sorted(ours.all_special_ids) == sorted(theirs.all_special_ids)
    assert (ours.eos_token_id, ours.pad_token_id) == (theirs.eos_token_id, theirs.pad_token_id)


def test_the_logits_are_transformers_on_a_left_padded_batch(both) -> None:
    import torch

    from backends.local.decode import new_cache

    (hf, tokenizer), (light, _) = both
    rows = [tokenizer(t)["input_ids"] for t in TEXTS]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        ours = light(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=new_cache(light)
        ).logits
    kept = mask.bool()
    assert torch.allclose(ours[kept], theirs[kept], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours[kept], theirs[kept].roll(1, dims=0), atol=1e-3)


@pytest.mark.parametrize("faithful", [True, False])
@pytest.mark.parametrize(("batch_size", "draft_tokens"), [(1, 15), (3, 15), (3, 0)])
def test_answers_are_transformers_token_for_token(both, faithful, batch_size, draft_tokens):
    (hf, hf_tokenizer), (light, tokenizer) = both
    conversations = [chat(t) for t in TEXTS]

    def answers(model, tok, draft: int) -> tuple[list[str], list[dict]]:
        details: list[dict] = []
        out = generate(
            model, tok, conversations, batch_size=batch_size, faithful=faithful,
            draft_tokens=draft, details=details, max_new_tokens=60,
        )  # fmt: skip
        return out, details

    theirs = answers(hf, hf_tokenizer, 0)  # transformers' model.generate, one token a pass
    assert len(set(theirs[0])) == len(TEXTS)
    assert answers(light, tokenizer, draft_tokens) == theirs


def test_a_merged_adapter_gives_the_same_weights_and_answers(tiny_model, tmp_path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from backends.local.model import quiet_peft

    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules="all-linear")
    with quiet_peft():
        adapted = get_peft_model(load_model(tiny_model, threads=1)[0], config)
        adapted.save_pretrained(tmp_path / "adapter")
    theirs, hf_tokenizer = load_for_inference(tiny_model, tmp_path / "adapter", threads=1)
    ours, tokenizer = load_for_inference(tiny_model, tmp_path / "adapter", threads=1, light=True)
    assert not hasattr(ours, "generate") and ours.fine_tuned
    mine, their_weights = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(mine[k], their_weights[k]) for k in mine)
    base = load_model(tiny_model, threads=1, light=True)[0].state_dict()
    assert any(not torch.equal(mine[k], base[k]) for k in mine)
    conversations = [chat(t) for t in TEXTS]
    assert generate(ours, tokenizer, conversations, faithful=True, max_new_tokens=40) == (
        generate(theirs, hf_tokenizer, conversations, faithful=True, max_new_tokens=40)
    )


def test_a_folder_it_does_not_cover_loads_through_transformers(tiny_model, tmp_path) -> None:
    folder = shutil.copytree(tiny_model, tmp_path / "scaled")
    config = json.loads((folder / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    (folder / "config.json").write_text(json.dumps(config))
    model, _ = load_model(folder, threads=1, light=True)
    assert hasattr(model, "generate")  # transformers' own


def test_half_precision_weights_read_as_fp32_and_other_types_are_not_read(tmp_path) -> None:
    import torch
    from safetensors.torch import save_file

    from backends.local.llama import read_safetensors, readable

    tensors = {"half": torch.randn(3, 4).bfloat16(), "full": torch.randn(5)}
    save_file(tensors, tmp_path / "w.safetensors")
    read = read_safetensors(tmp_path / "w.safetensors")
    assert readable(tmp_path / "w.safetensors")
    assert all(read[k].dtype == torch.float32 for k in tensors)
    assert all(torch.equal(read[k], tensors[k].float()) for k in tensors)
    save_file({"quantized": torch.zeros(3, dtype=torch.int8)}, tmp_path / "q.safetensors")
    assert not readable(tmp_path / "q.safetensors")
