"""Local sources: a folder or file of pages, a Medium export (folder or zip, unpacked once and
safely: no path outside it, at most ``ZIP_MAX_BYTES``), drafts skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from prefect import task

from core.io import atomic_path
from core.logs import run_logger
from tasks.scrape.feeds import parse_feed
from tasks.scrape.http import sha256_hex
from tasks.scrape.pages import PageRef

PAGE_SUFFIXES = (".html", ".htm", ".md", ".markdown")
FEED_SUFFIXES = (".xml", ".rss", ".atom")
ACCEPTED_SOURCES = (
    "an http(s) URL of an article or RSS/Atom feed, a folder or file of "
    ".html/.htm/.md/.markdown, a Medium export (.zip or its unpacked folder) "
    "or a feed file (.xml/.rss/.atom)"
)
ZIP_MAX_BYTES = 1 << 30  # a Medium export is a few MB; refuse a zip that unpacks past 1 GiB
MEDIUM_POST = re.compile(r"^(?:\d{4}-\d{2}-\d{2}_|draft_).*-[0-9a-f]{8,16}\.html$")


# --- local sources ----------------------------------------------------------------------


def file_ref(path: Path, source: str) -> PageRef:
    resolved = path.resolve()
    digest = sha256_hex(resolved.read_bytes())
    return {
        "source": source,
        "url": resolved.as_uri(),
        "path": str(resolved),
        "sha256": digest,
        "kind": "file",
    }


def _is_medium_export(folder: Path) -> bool:
    """A folder with ``posts/`` holding Medium-named posts (or a ``profile/`` beside it)."""
    posts = folder / "posts"
    if not posts.is_dir():
        return False
    return (folder / "profile").is_dir() or any(
        MEDIUM_POST.match(p.name) for p in posts.glob("*.html")
    )


def _medium_roots(folder: Path) -> list[Path]:
    """The Medium export(s) in ``folder``: itself, or its top-level export subfolder(s)."""
    if _is_medium_export(folder):
        return [folder]
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in subdirs if _is_medium_export(p)]


def _list_folder(folder: Path, source: str) -> list[PageRef]:
    """Refs for a Medium export's published posts, or every page file in a plain folder."""
    if roots := _medium_roots(folder):
        files = [
            p
            for root in roots
            for p in sorted((root / "posts").glob("*.html"))
            if not p.name.startswith(("draft_", "."))
        ]
    else:
        files = sorted(
            (p for p in folder.rglob("*") if p.suffix.lower() in PAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(folder).as_posix(),
        )
        files = [
            p for p in files if not any(s.startswith(".") for s in p.relative_to(folder).parts)
        ]
    return [file_ref(p, source) for p in files]


def _safe_members(zf: zipfile.ZipFile, source: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """Zip members as (info, relative path); refuse absolute or ``..`` names (zip-slip)."""
    members, total = [], 0
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise ValueError(
                f"{source}: refusing unsafe zip member {info.filename!r} "
                "(absolute path or '..' would write outside the extraction folder)"
            )
        total += info.file_size
        if total > ZIP_MAX_BYTES:
            raise ValueError(f"{source}: unpacks to more than {ZIP_MAX_BYTES} bytes; refused")
        if not info.is_dir():
            members.append((info, "/".join(parts)))
    return members


def _extract_zip(zip_path: Path, source: str, data_dir: str) -> Path:
    """Extract a zip once into DATA/raw/export/<sha256(zip)[:16]>/ (atomically) and return it."""
    dest = Path(data_dir) / "raw" / "export" / sha256_hex(zip_path.read_bytes())[:16]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info, rel in _safe_members(zf, source):
                with atomic_path(tmp / rel) as out, zf.open(info) as src, out.open("wb") as fh:
                    shutil.copyfileobj(src, fh)
        os.rename(tmp, dest)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{source} is not a readable .zip archive ({exc})") from exc
    except OSError:
        if not dest.is_dir():  # lost a race with another extraction of the same zip: fine
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def local_path(source: str) -> Path:
    """The local path a SOURCE names (a plain path or a ``file://`` URI)."""
    if source.startswith("file://"):
        return Path(unquote(urlsplit(source).path))
    return Path(source).expanduser()


@task
def list_local(source: str, data_dir: str) -> list[PageRef]:
    """Page refs for a local folder, file, Medium export (folder or .zip) or feed file."""
    path = local_path(source)
    if not path.exists():
        raise ValueError(f"{source!r}: no such file or folder; a source is {ACCEPTED_SOURCES}")
    suffix = path.suffix.lower()
    if path.is_dir():
        refs = _list_folder(path, source)
    elif suffix == ".zip":
        refs = _list_folder(_extract_zip(path, source, data_dir), source)
    elif suffix in FEED_SUFFIXES:
        refs = parse_feed(str(path), source, data_dir)
    elif suffix in PAGE_SUFFIXES:
        refs = [file_ref(path, source)]
    else:
        raise ValueError(
            f"{source!r}: unsupported file type {suffix!r}; a source is {ACCEPTED_SOURCES}"
        )
    if not refs:
        run_logger(__name__).warning("%s: no pages found", source)
    return refs
