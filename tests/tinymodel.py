"""A tiny random Llama chat model with a real (small) tokenizer, built offline in ~1 s.

Tests of the local backend (loading, LoRA training, generation) need a model that loads and
behaves exactly like the real base model, i.e. through the same ``load_model`` code path, with
the same ChatML chat template and end token, but that takes seconds rather than minutes. This
module writes one: a 2-layer Llama (hidden 64, ~0.1M parameters) with random weights, and a
byte-level BPE tokenizer trained in-process on a few KB of text (the bundled sample blog's
posts when present, else a built-in paragraph), with SmolLM2's special tokens and chat
template. Nothing is downloaded. The same ``seed`` (and the same training text) gives the same
files.

>>> import tempfile
>>> from backends.local.model import load_model
>>> path = make_tiny_model(tempfile.mkdtemp())  # doctest: +SKIP
>>> model, tokenizer = load_model(path)  # doctest: +SKIP
>>> tokenizer.eos_token, model.config.num_hidden_layers  # doctest: +SKIP
('<|im_end|>', 2)
"""

from __future__ import annotations

import html
import re
from pathlib import Path

# SmolLM2-135M-Instruct's chat template, copied verbatim from its GGUF's tokenizer.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# In SmolLM2's order, so the ids match too: <|endoftext|> = 0, <|im_start|> = 1, <|im_end|> = 2.
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 800  # 3 special + 256 byte symbols + ~540 merges
SAMPLE_POSTS = Path(__file__).resolve().parents[1] / "data" / "sample" / "posts"
MAX_TEXT_CHARS = 60_000  # a few sample posts: plenty for 540 merges, trains in ~0.1 s
SYSTEM_MESSAGE = "You render plain text into markdown format."  # the export's default

FALLBACK_TEXT = """\
# Writing plain text that reads well

Good writing is *clear* before it is **clever**. Start with the point, then the reasons,
then the details. Use short paragraphs, and one idea per paragraph.

## A checklist

- Say what the reader will get.
- Use `code` for names the reader types, and [links](https://example.com) for sources.
- Prefer lists for steps:
  1. write the draft;
  2. cut it by a third;
  3. read it aloud.

> The first draft of anything is a sketch, not a statue.

```python
def hello(name: str) -> str:
    return f"Hello, {name}!"
```

| Step | Time |
|------|------|
| Draft | 1 h |
| Edit | 2 h |

Markdown marks headings with #, emphasis with * or _, and code with backticks. Plain text
keeps the words and drops the marks; rendering puts them back.
"""


def chat(user: str) -> list[dict[str, str]]:
    """A system + user conversation: ``user`` is the text a model is asked to format."""
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user}]


def training_text(max_chars: int = MAX_TEXT_CHARS) -> str:
    """A few KB of prose for the tokenizer: the sample posts' text if present, else a fallback."""
    parts = []
    for post in sorted(SAMPLE_POSTS.glob("*.html")) if SAMPLE_POSTS.is_dir() else []:
        raw = post.read_text(encoding="utf-8", errors="replace")
        raw = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", raw)
        text = html.unescape(re.sub(r"<[^>]+>", " ", raw))
        parts.append(re.sub(r"[ \t]+", " ", text))
        if sum(map(len, parts)) >= max_chars:
            break
    return ("\n".join(parts)[:max_chars] + "\n" + FALLBACK_TEXT) if parts else FALLBACK_TEXT


def make_tokenizer(text: str | None = None, *, vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ChatML special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([text if text is not None else training_text()], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )


def make_tiny_model(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random Llama and its tokenizer to ``path`` (HF folder); return ``path``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        # 10x Llama's default 0.02: with tied embeddings a small init makes the residual
        # stream ~ the input embedding, so the model just repeats the last token; at 0.2 its
        # greedy output is varied text, which makes batching/padding bugs visible in tests.
        initializer_range=0.2,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|im_end|>"],
        dtype="float32",
    )
    fork_devices: list = []  # CPU only: fork_rng must not touch (or initialise) CUDA
    with torch.random.fork_rng(devices=fork_devices):  # leave the caller's RNG state alone
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_tiny_profile(path: Path, model: str | Path) -> Path:
    """The settings profile the tests train the tiny model with: 3 steps on short chunks,
    3 test chunks, a quick bootstrap. Written as YAML at ``path``."""
    path.write_text(
        "examples:\n  chunk_tokens: 96\n"
        f"finetune:\n  base_model: {model}\n  epochs: 1\n  max_steps: 3\n"
        "  max_seq_tokens: 1024\n  batch_size: 2\n  checkpoint_every: 100\n"
        "evaluate:\n  max_examples: 3\n  bootstrap_samples: 200\n"
    )
    return path
