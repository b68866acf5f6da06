"""Training examples: articles chunked at block boundaries, split by article.

Chunking is ``core.chunks``: an article's Markdown packed into chunks of at most
``chunk_tokens`` cl100k tokens at block boundaries. Each chunk's plain text is
``markdown_to_plain(chunk)``, so input and target correspond exactly.

Splitting is by article, never by chunk, so no article leaks between train and test. Each
article's split is a pure function of its id and the seed: ``u = sha256(f"{seed}:{id}")``
as a number in [0, 1); ``u < test_fraction`` -> test, ``u < test_fraction +
valid_fraction`` -> valid, else train. Adding an article never moves another one. If the
draw leaves the test split empty, the article with the smallest ``u`` goes to test (and
likewise valid, when there are at least three articles).

>>> assign_splits(["a", "b", "c", "d"], test_fraction=0.25, valid_fraction=0.25, seed=0)
{'a': 'test', 'b': 'train', 'c': 'train', 'd': 'valid'}
"""

from __future__ import annotations

import hashlib
import sys

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from config.settings import ExamplesSettings
from core import chunks
from core.articles import Article, Example
from core.caching import SourceOf
from core.chunks import chunk_markdown
from core.markdown import markdown_to_plain
from core.sample import spread
from core.tokens import count_tokens


def _unit(article_id: str, seed: int) -> float:
    """A uniform number in [0, 1) drawn from the article id and the seed."""
    digest = hashlib.sha256(f"{seed}:{article_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    article_ids: list[str], test_fraction: float, valid_fraction: float, seed: int
) -> dict[str, str]:
    """Map each article id to "train", "valid" or "test" (see the module docstring)."""
    draws = {i: _unit(i, seed) for i in sorted(set(article_ids))}
    splits = {
        i: "test"
        if u < test_fraction
        else "valid"
        if u < test_fraction + valid_fraction
        else "train"
        for i, u in draws.items()
    }
    for name, minimum in (("test", 2), ("valid", 3)):
        if len(draws) >= minimum and name not in splits.values():
            candidates = [i for i in draws if splits[i] == "train"]
            if len(candidates) > 1:
                splits[min(candidates, key=draws.__getitem__)] = name
    return splits


def article_examples(
    article: Article, split: str, chunk_tokens: int, max_chunks: int | None = None
) -> list[Example]:
    """The examples (one per chunk) of one article; at most ``max_chunks``, spread evenly."""
    chunks = chunk_markdown(article["markdown"], chunk_tokens)
    rows = []
    for index in spread(range(len(chunks)), max_chunks):
        markdown = chunks[index]
        plain = markdown_to_plain(markdown)
        rows.append(
            {
                "article_id": article["id"],
                "chunk": index,
                "split": split,
                "plain": plain,
                "markdown": markdown,
                "plain_tokens": count_tokens(plain),
                "markdown_tokens": count_tokens(markdown),
            }
        )
    return rows


CODE = SourceOf(functions=(sys.modules[__name__], chunks, markdown_to_plain))  # the chunks' makers


@task(cache_policy=INPUTS + TASK_SOURCE + CODE, persist_result=True)
def build_examples(articles: list[Article], examples: ExamplesSettings) -> list[Example]:
    """Chunk every article and assign its split: the rows of examples.parquet."""
    splits = assign_splits(
        [a["id"] for a in articles], examples.test_fraction, examples.valid_fraction, examples.seed
    )
    rows = []
    for article in sorted(articles, key=lambda a: a["id"]):
        split, cap = splits[article["id"]], examples.max_chunks_per_article
        rows += article_examples(article, split, examples.chunk_tokens, cap)
    return rows
