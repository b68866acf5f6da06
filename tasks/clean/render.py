"""The normalised article element as canonical Markdown: its blocks, then their inline content."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bs4 import Tag
from markdownify import MarkdownConverter

from core.inline import (
    BR,
    CODE,
    CODE_END,
    EM,
    EM_END,
    IMG,
    IMG_END,
    IMG_SRC,
    LINK,
    LINK_END,
    LINK_URL,
    STRONG,
    STRONG_END,
    render_inline,
)
from tasks.clean.body import page_body
from tasks.clean.dom import CONTROL, image_src, prepare
from tasks.clean.html import BLOCKS, CELLS, HEADINGS, parse_html
from tasks.clean.metadata import page_metadata


def html_to_markdown(html: str, *, keep_link_urls: bool = False, keep_images: bool = False) -> str:
    """Markdown of a page's article body, titled ``# Title`` when the title is known."""
    soup = parse_html(html)
    title = page_metadata(soup)["title"]
    return body_to_markdown(
        page_body(soup), keep_link_urls=keep_link_urls, keep_images=keep_images, title=title
    )


def body_to_markdown(
    body: Tag,
    *,
    keep_link_urls: bool = False,
    keep_images: bool = False,
    title: str | None = None,
) -> str:
    """Canonical Markdown of an article body element (see the module docstring)."""
    root = prepare(body, keep_images=keep_images, title=title)
    renderer = Renderer(InlineConverter(keep_link_urls=keep_link_urls, keep_images=keep_images))
    blocks = renderer.blocks(root)
    text = join_blocks(blocks)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


# --- Block rendering ---------------------------------------------------------------------------


@dataclass
class Block:
    """A rendered block: its kind decides how it joins its neighbours."""

    kind: str  # para, heading, code, quote, table, list, list-no-interrupt (ol not from 1)
    text: str


def join_blocks(blocks: list[Block]) -> str:
    """Blocks separated by one blank line."""
    return "\n\n".join(b.text for b in blocks if b.text)


class Renderer:
    """Renders a normalised body tree into Markdown blocks."""

    def __init__(self, inline: InlineConverter) -> None:
        """Render inline content with ``inline``."""
        self.inline = inline

    def blocks(self, container: Tag) -> list[Block]:
        """Blocks of a container's children, in order."""
        out: list[Block] = []
        for child in container.children:
            if isinstance(child, Tag):
                out.extend(b for b in self.block(child) if b.text)
        return out

    def block(self, tag: Tag) -> list[Block]:
        """Blocks for one child tag (containers are transparent)."""
        name = tag.name
        if name in HEADINGS:
            return [self.heading(tag)]
        if name in ("p", "td", "th"):
            return [Block("para", self.inline.render(tag, "para"))]
        if name == "pre":
            return [Block("code", code_block(tag))]
        if name in ("ul", "ol"):
            return [self.list(tag)]
        if name == "blockquote":
            return [Block("quote", quote(join_blocks(self.blocks(tag))))]
        if name == "table":
            return [Block("table", self.table(tag))]
        if name in BLOCKS:
            return self.blocks(tag)
        return []

    def heading(self, tag: Tag) -> Block:
        """A heading, or a paragraph for Medium's subtitle."""
        level = heading_level(tag)
        if level is None:
            return Block("para", self.inline.render(tag, "para"))
        text = self.inline.render(tag, "heading", level=level)
        return Block("heading", f"{'#' * level} {text}" if text else "")

    def list(self, tag: Tag) -> Block:
        """A tight list; ``start`` respected for ordered lists."""
        ordered = tag.name == "ol"
        start = list_start(tag) if ordered else 1
        items: list[str] = []
        for li in tag.find_all("li", recursive=False):
            content = self.list_item(li)
            if content:
                marker = f"{start + len(items)}. " if ordered else "- "
                items.append(marker + indent(content, len(marker)))
        kind = "list" if not ordered or start == 1 else "list-no-interrupt"
        return Block(kind, "\n".join(items))

    def list_item(self, li: Tag) -> str:
        """An item's blocks; a nested list follows its paragraph on the next line."""
        parts: list[str] = []
        previous: Block | None = None
        for block in self.blocks(li):
            tight = previous is not None and previous.kind == "para" and block.kind == "list"
            if parts:
                parts.append("\n" if tight else "\n\n")
            parts.append(block.text)
            previous = block
        return "".join(parts)

    def table(self, table: Tag) -> str:
        """A GFM pipe table; the first row is the header."""
        rows = [
            [self.inline.render(cell, "cell") for cell in tr.find_all(CELLS, recursive=False)]
            for tr in table.find_all("tr")
            if tr.find_parent("table") is table
        ]
        rows = [row for row in rows if row]
        if not any(any(cell for cell in row) for row in rows):
            return ""
        width = max(len(row) for row in rows)
        rows = [row + [""] * (width - len(row)) for row in rows]
        lines = [table_row(row) for row in rows]
        lines.insert(1, table_row(["---"] * width))
        return "\n".join(lines)


def table_row(cells: list[str]) -> str:
    """``| a | b |``."""
    return "| " + " | ".join(cells) + " |"


def heading_level(tag: Tag) -> int | None:
    """Markdown level of a heading; None for Medium's subtitle (a paragraph)."""
    if tag.get("data-md-level"):
        return int(tag["data-md-level"])
    classes = tag.get("class") or []
    if "graf--subtitle" in classes:
        return None
    level = int(tag.name[1])
    if "graf" in classes:  # Medium: h3 is the large heading, h4 the small one
        for name in classes:
            match = re.fullmatch(r"graf--h(\d)", name)
            if match:
                level = int(match.group(1))
        return min(6, max(2, level - 1))
    return level


def list_start(tag: Tag) -> int:
    """An ordered list's ``start`` (1 when absent or invalid)."""
    try:
        return min(max(int(str(tag.get("start", "1")).strip()), 0), 999_999_999)
    except ValueError:
        return 1


def indent(text: str, width: int) -> str:
    """Indent all lines but the first by ``width`` spaces (blank lines stay empty)."""
    pad = " " * width
    lines = text.split("\n")
    return "\n".join([lines[0], *[pad + line if line else "" for line in lines[1:]]])


def quote(text: str) -> str:
    """Prefix every line with ``> `` (``>`` on blank lines)."""
    if not text:
        return ""
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def code_block(pre: Tag) -> str:
    """A fenced code block: content verbatim (trailing spaces and edge blank lines dropped)."""
    text = pre.get_text().replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        return ""
    body = "\n".join(lines)
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{pre.get('data-lang') or ''}\n{body}\n{fence}"


# --- Inline content ----------------------------------------------------------------------------
# markdownify turns a leaf block's inline content into text with core.inline's private-use
# markers for the markup; render_inline() resolves them with the whole paragraph in view.


class InlineConverter(MarkdownConverter):
    """markdownify for inline content, emitting markers instead of Markdown syntax."""

    def __init__(self, *, keep_link_urls: bool, keep_images: bool) -> None:
        """Convert only inline tags; everything else passes its text through."""
        super().__init__(
            wrap=True,
            wrap_width=None,
            escape_asterisks=False,
            escape_underscores=False,
            escape_misc=False,
            convert=["a", "b", "strong", "i", "em", "code", "kbd", "samp", "tt", "br", "img"],
        )
        self.keep_link_urls = keep_link_urls
        self.keep_images = keep_images

    def escape(self, text: str, parent_tags: set[str]) -> str:
        """No escaping here: :func:`render_inline` escapes with the paragraph in view."""
        return text

    def render(self, leaf: Tag, context: str, level: int = 0) -> str:
        """Markdown of a leaf block's inline content (``context``: para, heading or cell)."""
        return render_inline(self.process_tag(leaf, parent_tags=set()), context, level)

    def _wrap(self, start: str, end: str, text: str, parent_tags: set[str]) -> str:
        """Text between markers, unless inside code."""
        return text if "_noformat" in parent_tags else f"{start}{text}{end}"

    def convert_em(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """``*em*``."""
        return self._wrap(EM, EM_END, text, parent_tags)

    def convert_strong(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """``**strong**``."""
        return self._wrap(STRONG, STRONG_END, text, parent_tags)

    def convert_code(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """A code span."""
        return self._wrap(CODE, CODE_END, text, parent_tags)

    convert_i = convert_em
    convert_b = convert_strong
    convert_kbd = convert_samp = convert_tt = convert_code

    def convert_a(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """Link text, or a link when keeping URLs."""
        href = str(el.get("href") or "").strip()
        usable = href and not href.lower().startswith("javascript:")
        nested = "_noformat" in parent_tags or "a" in parent_tags
        if not self.keep_link_urls or not usable or nested:
            return text
        return f"{LINK}{text}{LINK_URL}{CONTROL.sub('', href)}{LINK_END}"

    def convert_img(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """An image when keeping images, else nothing."""
        src = image_src(el)
        if not self.keep_images or not src or "_noformat" in parent_tags:
            return ""
        alt = CONTROL.sub("", str(el.get("alt") or ""))
        return f"{IMG}{alt}{IMG_SRC}{CONTROL.sub('', src)}{IMG_END}"

    def convert_br(self, el: Tag, text: str, parent_tags: set[str]) -> str:
        """A hard break."""
        return BR
