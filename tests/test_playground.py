"""``GET /``: the playground page of ``pgpt serve``.

Fast: the page and its files as the app serves them (public, even with ``--api-key``; nothing
loaded from another host; packaged). Slow: the page in headless Chromium against a real server
on 127.0.0.1 running the tiny model: text typed, Convert pressed, the streamed answer shown as
Markdown, rendered and diffed; the renderer and the diff called in the page; a wrong API key
and a request the model cannot take, shown as the server's own error messages.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from config.settings import load_settings
from server.app import create_app, serve_in_thread
from server.ui import PLAYGROUND

from conftest import screenshot, wait_in_page
from tinymodel import chat

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-playground-" + "k3y" * 4
PLAIN = "Hello world\n\nThis is plain text."  # the tiny model's faithful answer has a heading
MODEL = "tiny-model0"  # the tiny model's folder name: the base model's id


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]


def settings_of(root: Path, profile: str):
    """Settings from a profile's YAML text, over ``root/data``."""
    path = root / "profile.yaml"
    path.write_text(profile, encoding="utf-8")
    return load_settings(str(path), data_dir=root / "data")


def app_client(tmp_path: Path, profile: str = "", api_key: str | None = KEY) -> TestClient:
    """A TestClient of the app over an empty data dir (no model is loaded by these tests)."""
    return TestClient(create_app(settings_of(tmp_path, profile or "{}\n"), api_key=api_key))


# --- the page, served ------------------------------------------------------------------------


def test_the_page_and_its_files_need_no_key(tmp_path):
    client = app_client(tmp_path)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert (
        '<meta name="pgpt-system-message" content="You render plain text into markdown format.">'
        in page.text
    )
    links = Links()
    links.feed(page.text)
    assert sorted(links.urls) == [
        "data:,",
        "playground/diff.js",
        "playground/markdown.js",
        "playground/playground.css",
        "playground/playground.js",
    ]
    for url in links.urls[1:]:
        served = client.get(f"/{url}")
        assert served.status_code == 200, url
        kind = "text/css" if url.endswith(".css") else "text/javascript"
        assert served.headers["content-type"].startswith(kind)
        assert served.text == (PLAYGROUND / Path(url).name).read_text(encoding="utf-8")
    # the API itself still needs the key
    refused = client.get("/v1/models")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200


def test_only_the_page_files_are_served(tmp_path):
    client = app_client(tmp_path, api_key=None)
    for path in ("/playground/index.html", "/playground/nope.js", "/playground/..%2Fapp.py"):
        missing = client.get(path)
        assert missing.status_code == 404, path
        assert missing.json()["error"]["message"].startswith("Invalid URL")
    assert client.post("/").status_code == 405


def test_the_page_loads_nothing_from_another_host():
    files = sorted(PLAYGROUND.iterdir())
    assert {f.name for f in files} == {
        "index.html",
        "playground.css",
        "markdown.js",
        "diff.js",
        "playground.js",
    }
    for file in files:
        text = file.read_text(encoding="utf-8")
        assert not re.search(r"\b(?:https?:)?//[\w.-]+\.\w", text), file.name  # no URL at all
        assert "@import" not in text and "import(" not in text, file.name
    script = (PLAYGROUND / "playground.js").read_text(encoding="utf-8")
    assert re.findall(r'call\("([^"]+)"', script) == ["v1/models", "v1/chat/completions"]


def test_the_page_asks_with_the_configured_system_message(tmp_path):
    message = 'Format this as "Markdown" <please> & thanks.'
    client = app_client(tmp_path, f"export:\n  system_message: '{message}'\n", api_key=None)
    expected = "Format this as &quot;Markdown&quot; &lt;please&gt; &amp; thanks."
    assert f'<meta name="pgpt-system-message" content="{expected}">' in client.get("/").text


def test_the_page_files_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["server"]
    for file in PLAYGROUND.iterdir():
        relative = file.relative_to(ROOT / "server").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


# --- the page, in Chromium --------------------------------------------------------------------


@dataclass
class Served:
    """A running server: its page's URL, and the ``/v1`` base URL."""

    page: str
    api: str


@contextlib.contextmanager
def tiny_server(root: Path, tiny_model: Path, api_key: str | None = None) -> Iterator[Served]:
    """``pgpt serve`` over ``root/data`` with the tiny model as the base model (answers of at
    most 64 tokens)."""
    profile = f"finetune:\n  base_model: {tiny_model}\n  threads: 1\nserve:\n  max_tokens: 64\n"
    app = create_app(settings_of(root, profile), api_key=api_key)
    with serve_in_thread(app) as api:
        yield Served(api.removesuffix("v1"), api)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model) -> Iterator[Served]:
    """The server, open."""
    with tiny_server(tmp_path_factory.mktemp("playground"), tiny_model) as server:
        yield server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, tiny_model) -> Iterator[Served]:
    """The server, started with ``--api-key``."""
    with tiny_server(tmp_path_factory.mktemp("playground-key"), tiny_model, KEY) as server:
        yield server


def wait(driver, condition, what: str = ""):
    """``condition(driver)``'s first truthy value (``what``: what it waits for)."""
    return wait_in_page(driver, condition, f"not {what or condition.__name__}", poll_s=0.2)


def text_of(driver, element_id: str) -> str:
    """An element's whole text (textContent: hidden or scrolled away too)."""
    return driver.execute_script(
        "return document.getElementById(arguments[0]).textContent", element_id
    )


def error_shown(driver) -> str:
    """The error box's text once it is visible ('' while it is hidden)."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "error")
    return box.text if box.is_displayed() else ""


def models_listed(driver) -> list[str]:
    """The model picker's options."""
    return driver.execute_script(
        "return [...document.getElementById('model').options].map(o => o.value)"
    )


def convert(driver, text: str) -> None:
    """Type ``text``, press Convert, and wait for the answer to finish streaming."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "convert").click()
    wait(driver, lambda d: text_of(d, "status").startswith("Done") or error_shown(d), "done")


@pytest.mark.slow
def test_convert_streams_renders_and_diffs(browser, served, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(served.page)
    assert browser.title == "personal-gpt playground"
    assert wait(browser, models_listed) == [MODEL]
    assert browser.find_element(By.ID, "faithful").is_selected()  # on by default
    convert(browser, PLAIN)
    assert not error_shown(browser)

    # the streamed Markdown is the answer the API gives, unstreamed
    reply = httpx.post(
        f"{served.api}/chat/completions",
        json={"model": MODEL, "messages": chat(PLAIN), "faithful": True},
        timeout=120,
    )
    answer = reply.json()["choices"][0]["message"]["content"]
    assert text_of(browser, "markdown") == answer
    assert answer.startswith("# ")  # the tiny model's faithful answer opens with a heading

    heading = browser.find_element(By.CSS_SELECTOR, "#rendered h1")
    assert "Hello world" in heading.text
    assert "This is plain text." in text_of(browser, "rendered")

    inserted = browser.find_elements(By.CSS_SELECTOR, "#diff ins")
    assert inserted and inserted[0].text.startswith("#")
    # the diff holds both texts: the answer without its deletions, the input without its insertions
    kept = browser.execute_script(
        "const nodes = [...document.getElementById('diff').childNodes];"
        "const text = (skip) => nodes.filter(n => n.nodeName !== skip)"
        "  .map(n => n.textContent).join('');"
        "return [text('DEL'), text('INS')];"
    )
    assert kept == [answer, PLAIN]
    assert re.fullmatch(r"\+\d+ inserted, −0 deleted, \d+ kept", text_of(browser, "diff-summary"))
    screenshot(browser, tmp_path / "pgpt-playground.png")


@pytest.mark.slow
def test_the_renderer_and_the_diff_in_the_page(browser, served):
    from selenium.webdriver.common.by import By

    browser.get(served.page)
    wait(browser, models_listed)

    def render(markdown: str) -> str:
        return browser.execute_script("return PgptMarkdown.render(arguments[0])", markdown)

    assert render("## Why I write\n\nSome *plain* and **bold** `code`.") == (
        "<h2>Why I write</h2>\n"
        "<p>Some <em>plain</em> and <strong>bold</strong> <code>code</code>.</p>\n"
    )
    assert render("- one\n- two\n\n1. first\n2. second") == (
        "<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n<ol>\n<li>first</li>\n<li>second</li>\n</ol>\n"
    )
    assert render("> quoted\n\n```py\nx = '<b>'\n```") == (
        "<blockquote>\n<p>quoted</p>\n</blockquote>\n"
        '<pre><code class="language-py">x = &#39;&lt;b&gt;&#39;\n</code></pre>\n'
    )
    assert render("| A | B |\n|---|--:|\n| 1 | 2 |") == (
        '<table><thead><tr><th>A</th><th class="align-right">B</th></tr></thead>'
        '<tbody><tr><td>1</td><td class="align-right">2</td></tr></tbody></table>\n'
    )
    # markup from the input is text, and links keep only harmless addresses
    hostile = render('<img src=x onerror="alert(1)"> [a](javascript:alert(1)) [b](/ok "t")')
    assert "<img" not in hostile and "javascript" not in hostile
    assert '<a href="/ok" title="t"' in hostile

    browser.execute_script(
        "document.getElementById('rendered').innerHTML = PgptMarkdown.render(arguments[0])",
        "## A heading\n\ntext",
    )
    assert browser.find_element(By.CSS_SELECTOR, "#rendered h2").text == "A heading"

    ops = browser.execute_script(
        "return PgptDiff.diff(arguments[0], arguments[1])",
        "Title\nSome text",
        "# Title\n\nSome *text*",
    )
    assert ops == [
        {"op": "ins", "text": "# "},
        {"op": "same", "text": "Title\n"},
        {"op": "ins", "text": "\n"},
        {"op": "same", "text": "Some "},
        {"op": "ins", "text": "*"},
        {"op": "same", "text": "text"},
        {"op": "ins", "text": "*"},
    ]


@pytest.mark.slow
def test_a_wrong_key_shows_the_server_error_and_the_right_one_works(browser, keyed, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(keyed.page)
    # no key yet: the server's 401 is shown, and the key is asked for
    shown = wait(browser, error_shown)
    assert "Error 401" in shown and "You didn't provide an API key" in shown
    key = browser.find_element(By.ID, "key")
    assert key.is_displayed() and models_listed(browser) == []

    key.send_keys("sk-wrong")
    browser.find_element(By.ID, "key-save").click()
    wait(browser, lambda d: "Incorrect API key provided." in error_shown(d), "refused")
    screenshot(browser, tmp_path / "pgpt-playground-error.png")

    key = browser.find_element(By.ID, "key")
    key.clear()
    key.send_keys(KEY)
    browser.find_element(By.ID, "key-save").click()
    assert wait(browser, models_listed) == [MODEL]
    assert not error_shown(browser)
    assert browser.execute_script("return sessionStorage.getItem('pgpt-api-key')") == KEY
    convert(browser, "Why I write")  # the chat request carries the key too
    assert not error_shown(browser) and text_of(browser, "markdown")


@pytest.mark.slow
def test_a_request_the_model_cannot_take_shows_the_server_error(browser, served):
    from selenium.webdriver.common.by import By

    browser.get(served.page)
    wait(browser, models_listed)
    long = " ".join(["word"] * 3000)  # over the tiny model's 2048-token context
    browser.execute_script("document.getElementById('text').value = arguments[0]", long)
    browser.find_element(By.ID, "convert").click()
    shown = wait(browser, error_shown)
    assert "Error 400" in shown and "maximum context length is 2048 tokens" in shown
    assert text_of(browser, "markdown") == "" and not text_of(browser, "status").startswith("Done")
    assert browser.find_element(By.ID, "convert").is_enabled()  # ready for the next try
