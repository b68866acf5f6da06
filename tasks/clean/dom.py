"""DOM normalisation: afterwards every run of inline content sits in a leaf block."""

from __future__ import annotations

import copy
import re
from typing import Any

from bs4 import NavigableString, Tag

from tasks.clean.body import class_words, remove_junk
from tasks.clean.html import (
    BLOCKS,
    CELLS,
    CONTAINERS,
    LEAVES,
    collapse,
    has_ancestor,
    new_tag,
    tags,
)
from tasks.clean.metadata import first_with_class

# --- DOM normalisation: afterwards every run of inline content sits in a leaf block ----------


def prepare(body: Tag, *, keep_images: bool, title: str | None) -> Tag:
    """A normalised copy of the body inside a ``div`` (the input is not changed)."""
    root = new_tag("div")
    root.append(copy.copy(body))
    remove_junk(root)
    clean_strings(root)
    drop_dividers_and_images(root, keep_images=keep_images)
    prepare_code(root)
    prepare_figures(root)
    prepare_tables(root)
    for tag in tags(root, {"dt", "summary", "legend", "figcaption"}):
        tag.name = "p"
    flatten_leaves(root)
    unwrap_inline_wrappers(root)
    limit_nesting(root)
    fix_lists(root)
    wrap_loose_inline(root)
    merge_adjacent(root, "blockquote")
    merge_adjacent(root, "ul")
    merge_adjacent(root, "ol")
    place_title(root, title)
    return root


CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000-\ue01f]")
# stays and the elements go, so the cleaning (recursive in places) stays within Python's stack
MAX_NESTING = 6  # lists and quotes inside each other: markdown-it reads 20 levels of blocks
# (two a list), so deeper ones become plain blocks (no article nests lists past 4)


def limit_nesting(root: Tag) -> None:
    """Lists and quotes inside :data:`MAX_NESTING` others become plain containers (their
    items paragraphs), so the Markdown reads back whole."""
    nested = {"ul", "ol", "blockquote"}
    for tag in tags(root, nested):
        if sum(parent.name in nested for parent in tag.parents) >= MAX_NESTING:
            for item in tag.find_all("li", recursive=False):
                item.name = "div"
            tag.name = "div"


def clean_strings(root: Tag) -> None:
    """Drop control characters (and our private-use markers) from all text."""
    for node in root.find_all(string=True):
        if CONTROL.search(node):
            node.replace_with(type(node)(CONTROL.sub("", node)))


def drop_dividers_and_images(root: Tag, *, keep_images: bool) -> None:
    """Remove ``<hr>``, Medium section dividers and (unless kept) images."""
    for tag in tags(root, {"hr", "img", "picture"}):
        if tag.parent is None:
            continue
        if tag.name == "img" and keep_images and image_src(tag) and not is_thumbnail(tag):
            continue
        if tag.name == "picture" and keep_images:
            tag.unwrap()
            continue
        tag.decompose()
    for tag in tags(root):
        if tag.parent is not None and "section-divider" in (tag.get("class") or []):
            tag.decompose()


def image_src(img: Tag) -> str:
    """An image's URL (``src``, else lazy-loading ``data-src``)."""
    return str(img.get("src") or img.get("data-src") or "").strip()


def is_thumbnail(img: Tag) -> bool:
    """Medium's blurred placeholder copy of an image."""
    return "thumbnail" in class_words(img)


def code_language(pre: Tag) -> str:
    """Language of a code block: Medium's attribute, else a ``language-x``/``lang-x`` class."""
    lang = str(pre.get("data-code-block-lang") or "")
    if not lang:
        for tag in [pre, *pre.find_all("code")]:
            for name in tag.get("class") or []:
                match = re.match(r"(?:language|lang)-(.+)", name)
                if match:
                    lang = match.group(1)
                    break
            if lang:
                break
    return lang if re.fullmatch(r"[A-Za-z0-9_+#.-]{1,40}", lang) else ""


def prepare_code(root: Tag) -> None:
    """``<br>`` in ``<pre>`` -> newline; adjacent Medium ``graf--pre`` blocks share one fence."""
    for pre in tags(root, {"pre"}):
        if pre.parent is None:
            continue
        for br in pre.find_all("br"):
            br.replace_with("\n")
        lang = code_language(pre)
        pre.attrs = {"data-lang": lang, "class": pre.get("class") or []}
        text = pre.get_text()
        nxt = next_element_sibling(pre)
        while is_medium_pre(pre) and is_medium_pre(nxt) and code_language(nxt) == lang:
            for br in nxt.find_all("br"):
                br.replace_with("\n")
            text += "\n" + nxt.get_text()
            following = next_element_sibling(nxt)
            nxt.decompose()
            nxt = following
        pre.clear()
        pre.append(NavigableString(text))


def is_medium_pre(tag: Tag | None) -> bool:
    """A Medium code-block graf."""
    return tag is not None and tag.name == "pre" and "graf--pre" in (tag.get("class") or [])


def next_element_sibling(tag: Tag) -> Tag | None:
    """The next sibling tag, if only whitespace lies between."""
    node = tag.next_sibling
    while isinstance(node, NavigableString) and not node.strip():
        node = node.next_sibling
    return node if isinstance(node, Tag) else None


def prepare_figures(root: Tag) -> None:
    """An embed figure (Medium ``graf--iframe``) keeps only its caption."""
    for figure in tags(root, {"figure"}):
        if figure.parent is not None and "graf--iframe" in (figure.get("class") or []):
            for child in list(figure.children):
                if not (isinstance(child, Tag) and child.name == "figcaption"):
                    child.extract()


TABLE_CHILDREN = {
    "table": {"thead", "tbody", "tfoot", "tr"},
    "thead": {"tr"},
    "tbody": {"tr"},
    "tfoot": {"tr"},
    "tr": set(CELLS),
}


def prepare_tables(root: Tag) -> None:
    """Regularise tables; table parts outside any table become plain containers."""
    for part in tags(root, {"thead", "tbody", "tfoot", "tr", "caption"}):
        if not has_ancestor(part, {"table"}):
            part.name = "div"
    for table in tags(root, {"table"}):
        regularise_table(table)


def nearest_table(tag: Tag) -> Tag | None:
    """The innermost table around a tag."""
    return next((parent for parent in tag.parents if parent.name == "table"), None)


def regularise_table(table: Tag) -> None:
    """Cells outside a row get one; anything else misplaced moves before the table, in order."""
    parts = [table, *tags(table, {"thead", "tbody", "tfoot", "tr"})]
    part_ids = {id(part) for part in parts if part is table or nearest_table(part) is table}
    made_rows: set[int] = set()
    for node in list(table.descendants):
        part = node.parent
        if part is None or id(part) not in part_ids:
            continue
        name = node.name if isinstance(node, Tag) else None
        if name in TABLE_CHILDREN[part.name] or (name is None and not node.strip()):
            continue
        if name in CELLS:
            row = previous_element_sibling(node)
            if row is None or id(row) not in made_rows:
                row = new_tag("tr")
                made_rows.add(id(row))
                node.insert_before(row)
            row.append(node.extract())
        elif name in ("colgroup", "col"):
            node.decompose()
        elif name == "caption":
            node.name = "p"
            table.insert_before(node.extract())
        else:
            paragraph = new_tag("p")
            table.insert_before(paragraph)
            paragraph.append(node.extract())


def previous_element_sibling(tag: Tag) -> Tag | None:
    """The previous sibling tag, if only whitespace lies between."""
    node = tag.previous_sibling
    while isinstance(node, NavigableString) and not node.strip():
        node = node.previous_sibling
    return node if isinstance(node, Tag) else None


def flatten_leaves(root: Tag) -> None:
    """Block elements inside paragraphs, headings and cells become inline (space-separated)."""
    for inner in tags(root, BLOCKS):
        if inner.parent is not None and has_ancestor(inner, LEAVES):
            inner.insert_before(" ")
            inner.insert_after(" ")
            inner.unwrap()


def unwrap_inline_wrappers(root: Tag) -> None:
    """Inline elements wrapping blocks (``<a><h2>..</h2></a>``) are unwrapped."""
    wrappers: dict[int, Tag] = {}
    for block in tags(root, BLOCKS):
        for parent in block.parents:
            if parent.name not in BLOCKS and parent is not root:
                wrappers[id(parent)] = parent
    for tag in wrappers.values():
        tag.unwrap()


def fix_lists(root: Tag) -> None:
    """Anything directly inside ``<ul>``/``<ol>`` that is not an ``<li>`` goes into one."""
    for lst in tags(root, {"ul", "ol"}):
        item: Tag | None = None
        for child in list(lst.children):
            if isinstance(child, Tag) and child.name == "li":
                item = None
            elif isinstance(child, Tag) or child.strip():
                if item is None:
                    item = new_tag("li")
                    child.insert_before(item)
                item.append(child.extract())


def is_block(node: Any) -> bool:
    """A block-level tag."""
    return isinstance(node, Tag) and node.name in BLOCKS


def wrap_loose_inline(root: Tag) -> None:
    """Runs of text and inline tags directly inside containers are wrapped in ``<p>``."""
    for container in [root, *tags(root, CONTAINERS)]:
        run: list[Any] = []
        for child in [*container.children, None]:
            if child is not None and not is_block(child):
                run.append(child)
                continue
            if run and has_inline_content(run):
                paragraph = new_tag("p")
                run[0].insert_before(paragraph)
                for node in run:
                    paragraph.append(node.extract())
            run = []


def has_inline_content(nodes: list[Any]) -> bool:
    """Whether inline nodes hold any text or image."""
    for node in nodes:
        if isinstance(node, NavigableString):
            if node.strip():
                return True
        elif node.name == "img" or node.find("img") or node.get_text().strip():
            return True
    return False


def merge_adjacent(root: Tag, name: str) -> None:
    """Adjacent sibling ``name`` elements become one (pull quotes only with pull quotes)."""
    for tag in tags(root, {name}):
        if tag.parent is None:
            continue
        nxt = next_element_sibling(tag)
        while nxt is not None and nxt.name == name and is_pullquote(nxt) == is_pullquote(tag):
            for child in list(nxt.children):
                tag.append(child.extract())
            following = next_element_sibling(nxt)
            nxt.decompose()
            nxt = following


def is_pullquote(tag: Tag) -> bool:
    """A Medium pull quote graf."""
    return "graf--pullquote" in (tag.get("class") or [])


def same_title(a: str, b: str) -> bool:
    """Titles equal up to whitespace and case."""
    return collapse(a).casefold() == collapse(b).casefold()


def place_title(root: Tag, title: str | None) -> None:
    """Make the title heading ``#`` and first; add one from ``title`` when the body has none."""
    heading = first_with_class(root, None, "graf--title")
    if heading is None and title:
        heading = next(
            (h for h in tags(root, {"h1", "h2", "h3"}) if same_title(h.get_text(), title)),
            None,
        )
    if heading is None and title:
        heading = new_tag("h1")
        heading.append(NavigableString(title))
    if heading is not None:
        heading.name = "h1"
        heading["data-md-level"] = "1"
        root.insert(0, heading.extract())
