"""The HTML vocabulary of article pages (blocks, chrome, junk) and the tree helpers of each step."""

from __future__ import annotations

from collections.abc import Iterable

from bs4 import BeautifulSoup, NavigableString, Tag


def word_set(text: str) -> frozenset[str]:
    """The whitespace-separated words of a text, as a set."""
    return frozenset(text.split())


HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
CELLS = ("td", "th")
LEAVES = HEADINGS | {"p", *CELLS}  # blocks holding inline content only
TABLE_PARTS = frozenset({"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption"})
CONTAINERS = word_set(
    """address article aside blockquote body center dd details div dl fieldset figure footer
    form header hgroup html li main nav ol section ul"""
)
BLOCKS = LEAVES | TABLE_PARTS | CONTAINERS | {"pre", "hr", "dt", "figcaption", "summary", "legend"}
JUNK = word_set(
    """audio button canvas dialog embed frame frameset head iframe input label link map math
    meta noscript object option script select source style svg template textarea title
    track video"""
)
ALWAYS_CHROME = frozenset({"nav", "aside", "footer", "form"})

# Class/id words that mark site chrome (camelCase and dashes split into words).
CHROME_WORDS = word_set(
    """share sharing social clap claps follow followers subscribe subscription newsletter
    signup related recommend recommended recommendation recommendations comment comments
    response responses byline metabar breadcrumb breadcrumbs cookie cookies promo promotion
    advert advertisement sponsored mixtape divider sidebar widget popup modal paywall
    pagination disqus toolbar"""
)
CHROME_PAIRS = frozenset(
    {
        ("post", "meta"),
        ("entry", "meta"),
        ("article", "meta"),
        ("more", "from"),
        ("author", "card"),
        ("author", "bio"),
        ("about", "author"),
        ("post", "nav"),
        ("post", "navigation"),
        ("post", "footer"),
        ("post", "actions"),
        ("site", "header"),
        ("site", "footer"),
        ("site", "nav"),
        ("sign", "up"),
        ("sign", "in"),
        ("reading", "time"),
        ("read", "next"),
    }
)
DISCUSSION_WORDS = frozenset({"comment", "comments", "response", "responses", "disqus"})

BODY_SELECTORS = (
    "section[data-field=body]",  # Medium export
    ".postArticle-content",  # Medium page
    "[itemprop=articleBody]",
    ".post-content",
    ".entry-content",
    ".article-content",
    ".article-body",
    ".post-body",
    "article",
    "main",
    "[role=main]",
)


def parse_html(html: str) -> BeautifulSoup:
    """Parse HTML with lxml, nested no deeper than :data:`MAX_DEPTH`."""
    soup = BeautifulSoup(html, "lxml")
    flatten_deep(soup)
    return soup


def collapse(text: str) -> str:
    """Whitespace runs -> one space, stripped."""
    return " ".join(text.split())


def new_tag(name: str, attrs: dict[str, str] | None = None) -> Tag:
    """A detached tag."""
    return Tag(name=name, attrs=attrs or {})


def tags(root: Tag, names: Iterable[str] | None = None) -> list[Tag]:
    """Descendant tags (named ``names``, if given), in document order, as a snapshot."""
    wanted = None if names is None else frozenset(names)
    return [
        node
        for node in root.descendants
        if isinstance(node, Tag) and (wanted is None or node.name in wanted)
    ]


def has_ancestor(tag: Tag, names: Iterable[str]) -> bool:
    """Whether any ancestor of the tag is named in ``names``."""
    return any(parent.name in names for parent in tag.parents)


MAX_DEPTH = 100  # elements: no article nests deeper, a hostile page may; below this the text


def flatten_deep(root: Tag) -> None:
    """Each element :data:`MAX_DEPTH` levels under ``root`` replaced by its text (with all
    the elements in it), so none is left that deep.

    >>> root = BeautifulSoup("<div>" * 300 + "deep" + "</div>" * 300, "lxml").body
    >>> flatten_deep(root)
    >>> len(root.find_all(True)), root.get_text()
    (99, 'deep')
    """
    level = [root]
    for _ in range(MAX_DEPTH):
        level = [child for tag in level for child in tag.find_all(True, recursive=False)]
    for tag in level:
        tag.replace_with(NavigableString(tag.get_text()))
