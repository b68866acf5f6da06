"""Regenerate ``data/sample/feed.xml``, a Medium-style RSS 2.0 feed of ``posts/*.html``.

Like Medium's per-author feed, each item carries the article's body HTML in
``content:encoded``, so ingesting the feed needs no request per article. A test checks
that the committed feed is what this script writes.

    .venv/bin/python data/sample/make_feed.py
"""

from __future__ import annotations

import sys
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path

from tasks.clean import extract_body, extract_metadata

HERE = Path(__file__).resolve().parent
CHANNEL = "https://medium.com/@marenholt"
PIXEL = '<img src="https://medium.com/_/stat?event=post.clientViewed" width="1" height="1" alt="">'
NAMESPACES = " ".join(
    f'xmlns:{prefix}="{uri}"'
    for prefix, uri in (
        ("dc", "http://purl.org/dc/elements/1.1/"),
        ("content", "http://purl.org/rss/1.0/modules/content/"),
        ("atom", "http://www.w3.org/2005/Atom"),
    )
)


def item(page: Path) -> str:
    """One RSS item for a post page."""
    html = page.read_text(encoding="utf-8")
    meta = extract_metadata(html)
    published = datetime.fromisoformat(meta["published"].replace("Z", "+00:00"))
    body = extract_body(html).decode_contents().strip()
    return f"""<item>
<title><![CDATA[{meta["title"]}]]></title>
<link>{meta["canonical_url"]}?source=rss-2f1e0c9a7b3d------2</link>
<guid isPermaLink="false">{meta["canonical_url"]}</guid>
<dc:creator><![CDATA[{meta["author"]}]]></dc:creator>
<pubDate>{format_datetime(published, usegmt=True)}</pubDate>
<content:encoded><![CDATA[{body}{PIXEL}]]></content:encoded>
</item>"""


def feed(posts: list[Path]) -> str:
    """The whole feed, newest first, as Medium orders it."""
    items = sorted(posts, reverse=True)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss {NAMESPACES} version="2.0">
<channel>
<title><![CDATA[Stories by Maren Holt on Medium]]></title>
<description><![CDATA[Stories by Maren Holt on Medium]]></description>
<link>{CHANNEL}?source=rss-2f1e0c9a7b3d------2</link>
<generator>Medium</generator>
<atom:link href="https://medium.com/feed/@marenholt" rel="self" type="application/rss+xml"/>
{chr(10).join(item(p) for p in items)}
</channel>
</rss>
"""


if __name__ == "__main__":
    out = HERE / "feed.xml"
    out.write_text(feed(sorted((HERE / "posts").glob("*.html"))), encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
