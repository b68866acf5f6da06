"""The bundled sample blog: big and varied enough to train on, and its feed up to date."""

from __future__ import annotations

import importlib.util

import pytest

from core.markdown import markdown_to_plain
from tasks.clean import html_to_markdown

from conftest import SAMPLE

POSTS = sorted((SAMPLE / "posts").glob("*.html"))


def load_make_feed():
    spec = importlib.util.spec_from_file_location("make_feed", SAMPLE / "make_feed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_feed_is_what_make_feed_writes():
    expected = load_make_feed().feed(POSTS)
    assert (SAMPLE / "feed.xml").read_text(encoding="utf-8") == expected, (
        "data/sample/feed.xml is stale: run .venv/bin/python data/sample/make_feed.py"
    )


@pytest.mark.parametrize("post", POSTS, ids=lambda p: p.stem[:2])
def test_each_article_is_600_to_1500_words(post):
    words = len(markdown_to_plain(html_to_markdown(post.read_text())).split())
    assert 600 <= words <= 1500


def test_the_sample_covers_every_kind_of_markup():
    markdowns = [html_to_markdown(p.read_text()) for p in POSTS]
    assert len(markdowns) >= 12
    text = "\n\n".join(markdowns)
    for needle in (
        "\n## ",
        "\n### ",
        "\n- ",
        "\n1. ",
        "\n  - ",
        "\n```python",
        "\n> ",
        "**",
        "*",
        "`",
        "\n| --- |",
    ):
        assert needle in text, needle
