"""A model folder's tokenizer through the `tokenizers` library, without transformers.

The few calls answering makes (``tokenizer(text)``, the chat template, decoding, the
vocabulary and the special tokens), with transformers' results, for the light start-up of
``backends.local.llama``: importing transformers' tokenizer classes imports much of
transformers. The chat template is the folder's Jinja template, rendered
as transformers renders it (trimmed blocks, a sandbox).

Tokenizer.load(folder)("Hello")["input_ids"] is transformers'
``AutoTokenizer.from_pretrained(folder)("Hello", add_special_tokens=False)["input_ids"]``
(tests/test_llama.py compares them, the chat template and the decoded texts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")  # tokenizer_config.json's


class Tokenizer:
    """What answering needs of transformers' tokenizer, with the same ids and texts."""

    padding_side = "left"

    def __init__(self, backend: Any, config: dict[str, Any], template: str) -> None:
        self.backend, self.template = backend, template
        self.vocab: dict[str, int] = backend.get_vocab(with_added_tokens=True)
        named = {key: config[key] for key in SPECIAL if isinstance(config.get(key), str)}
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens")
        self.special = [*named.values(), *(extra or [])]
        self.eos_token = named.get("eos_token")
        self.pad_token = named.get("pad_token", self.eos_token)

    @classmethod
    def load(cls, folder: Path) -> Tokenizer:
        """The tokenizer in ``folder`` (tokenizer.json, tokenizer_config.json, the template)."""
        from tokenizers import Tokenizer as Backend

        folder = Path(folder)
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        jinja = folder / "chat_template.jinja"
        template = jinja.read_text(encoding="utf-8") if jinja.is_file() else config["chat_template"]
        return cls(Backend.from_file(str(folder / "tokenizer.json")), config, template)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": self.backend.encode(text, add_special_tokens=False).ids}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    @property
    def all_special_ids(self) -> list[int]:
        return list(dict.fromkeys(self.vocab[t] for t in self.special if t in self.vocab))

    @property
    def eos_token_id(self) -> int | None:
        return self.vocab.get(self.eos_token) if self.eos_token else None

    @property
    def pad_token_id(self) -> int | None:
        return self.vocab.get(self.pad_token) if self.pad_token else None

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows: list[list[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in rows]

    def apply_chat_template(
        self, messages: list[Any], tokenize: bool = True, add_generation_prompt: bool = False
    ) -> Any:
        """The conversation as the model reads it (its ids if ``tokenize``)."""
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        text = env.from_string(self.template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **self.named()
        )
        return self(text)["input_ids"] if tokenize else text

    def named(self) -> dict[str, str]:
        """The special tokens by name, as chat templates refer to them (``eos_token``...)."""
        return {"eos_token": self.eos_token or "", "pad_token": self.pad_token or ""}
