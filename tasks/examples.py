"""Training examples: articles chunked at block boundaries, split by article.

Chunking: an article's Markdown is cut into its top-level blocks (markdown-it's block
tokens: a paragraph, a heading, a whole list, a whole code block, a whole table, a whole
quote), then blocks are packed greedily into chunks of at most ``chunk_tokens`` cl100k
tokens of Markdown. A chunk never ends inside a code block or a list; a single block longer
than the budget becomes a chunk of its own (counted as ``oversized`` in the stats). Each
chunk's plain text is ``markdown_to_plain(chunk)``, so input and target correspond exactly.

Splitting is by article, never by chunk, so no article leaks between train and test. Each
article's split is a pure function of its id and the seed: ``u = sha256(f"{seed}:{id}")``
as a number in [0, 1); ``u < test_fraction`` -> test, ``u < test_fraction +
valid_fraction`` -> valid, else train. Adding an article never moves another one. If the
draw leaves the test split empty, the article with the smallest ``u`` goes to test (and
likewise valid, when there are at least three articles).

>>> chunk_markdown("# Title\\n\\nOne.\\n\\n- a\\n- b", max_tokens=4)
['# Title', 'One.', '- a\\n- b']
>>> chunk_plain("Title\\nOne.\\nTwo.", max_tokens=4)
['Title\\nOne.', 'Two.']
>>> assign_splits(["a", "b", "c", "d"], test_fraction=0.25, valid_fraction=0.25, seed=0)
{'a': 'test', 'b': 'train', 'c': 'train', 'd': 'valid'}
"""

from __future__ import annotations

import hashlib

from markdown_it import MarkdownIt
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from tasks.clean import markdown_to_plain
from tasks.tokens import count_tokens

_PARSER = MarkdownIt("commonmark").enable("table")


def split_blocks(markdown: str) -> list[str]:
    """The top-level Markdown blocks, each as its source lines."""
    lines = markdown.split("\n")
    blocks = []
    for token in _PARSER.parse(markdown):
        if token.level == 0 and token.map and token.nesting in (0, 1):
            start, end = token.map
            blocks.append("\n".join(lines[start:end]).strip("\n"))
    return [b for b in blocks if b.strip()]


def chunk_markdown(markdown: str, max_tokens: int) -> list[str]:
    """Pack whole blocks greedily into chunks of at most ``max_tokens`` tokens."""
    chunks: list[str] = []
    current: list[str] = []
    for block in split_blocks(markdown):
        candidate = "\n\n".join([*current, block])
        if current and count_tokens(candidate) > max_tokens:
            chunks.append("\n\n".join(current))
            current = [block]
        else:
            current.append(block)
    if current:
        chunks.append("\n\n".join(current))
    return chunks


def chunk_plain(plain: str, max_tokens: int) -> list[str]:
    """Pack whole lines of plain text into chunks of at most ``max_tokens`` tokens.

    Plain text has one block per line, so this cuts new text the way the training examples
    were cut (at block boundaries); a single line over the budget is a chunk of its own.
    """
    chunks: list[str] = []
    current: list[str] = []
    for line in plain.strip("\n").split("\n"):
        if current and count_tokens("\n".join([*current, line])) > max_tokens:
            chunks.append("\n".join(current))
            current = []
        current.append(line)
    if current and any(line.strip() for line in current):
        chunks.append("\n".join(current))
    return chunks


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


def article_examples(article: dict, split: str, chunk_tokens: int) -> list[dict]:
    """The examples (one per chunk) of one article."""
    rows = []
    for index, markdown in enumerate(chunk_markdown(article["markdown"], chunk_tokens)):
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


@task(cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def build_examples(articles: list[dict], examples: dict) -> list[dict]:
    """Chunk every article and assign its split: the rows of examples.parquet."""
    splits = assign_splits(
        [a["id"] for a in articles],
        examples["test_fraction"],
        examples["valid_fraction"],
        examples["seed"],
    )
    rows = []
    for article in sorted(articles, key=lambda a: a["id"]):
        rows += article_examples(article, splits[article["id"]], examples["chunk_tokens"])
    return rows
