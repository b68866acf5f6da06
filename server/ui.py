"""The playground: ``GET /`` of ``pgpt serve``, one static page that formats text with a model.

The page (``server/playground/``: HTML, CSS and vanilla JS, no build step) lists the models of
``/v1/models``, streams an answer from ``/v1/chat/completions`` and shows it as Markdown,
rendered, and as a word diff against the input. It is public, even with ``--api-key``: its
API calls carry the key, which it asks for on a 401. It loads nothing but these files.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PLAYGROUND = Path(__file__).with_name("playground")  # the page at / and its files
PLAYGROUND_FILES = {
    "playground.css": "text/css",
    "markdown.js": "text/javascript",
    "diff.js": "text/javascript",
    "playground.js": "text/javascript",
}
SYSTEM_MESSAGE_META = '<meta name="pgpt-system-message" content="">'
# the page loads nothing but this server's own files, and runs no inline script
PLAYGROUND_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def add_playground_routes(app: FastAPI, system_message: str) -> None:
    """``/``: the playground page (public: its API calls carry the key), and its files."""
    page = (PLAYGROUND / "index.html").read_text(encoding="utf-8")
    if SYSTEM_MESSAGE_META not in page:
        raise RuntimeError(f"{PLAYGROUND / 'index.html'} lost its {SYSTEM_MESSAGE_META}")
    page = page.replace(  # the system message the product trains and formats with
        SYSTEM_MESSAGE_META,
        SYSTEM_MESSAGE_META.replace('content=""', f'content="{html.escape(system_message)}"'),
    )

    @app.get("/", include_in_schema=False)
    def playground() -> HTMLResponse:
        return HTMLResponse(page, headers=PLAYGROUND_HEADERS)

    @app.get("/playground/{name}", include_in_schema=False)
    def playground_file(name: str) -> FileResponse:
        if name not in PLAYGROUND_FILES:
            raise StarletteHTTPException(404)
        return FileResponse(
            PLAYGROUND / name, media_type=PLAYGROUND_FILES[name], headers=PLAYGROUND_HEADERS
        )
