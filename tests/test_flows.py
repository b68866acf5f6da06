"""The Prefect flows end to end: outputs, caching across runs, incremental ingest."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from config.runtime import results_in
from core.markdown import markdown_to_plain
from core.runs import current_model
from flows.ingest import ingest
from pgpt import app
from tasks.store import read_articles

from conftest import SAMPLE, task_states
from sitefixture import site_fixture  # noqa: F401  (the `site` fixture)

pytestmark = pytest.mark.usefixtures("prefect_server")

N_SAMPLE = len(list((SAMPLE / "posts").glob("*.html")))


def latest_artifact(key: str) -> dict:
    """The newest artifact with ``key``, read through the REST API.

    (Prefect 3.8.8's own client sends ``null`` for unset filters, which its server rejects.)
    """
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1, "offset": 0}
    with get_client(sync_client=True) as client:
        response = client.request("POST", "/artifacts/filter", json=body)
    return response.json()[0]


def run_ingest(sources, data_dir):
    with results_in(data_dir):
        state = ingest(sources, "default", str(data_dir), return_state=True)
    return state.result(), task_states(state)


def test_rerun_is_cached_and_a_new_article_is_the_only_work(tmp_path):
    posts = tmp_path / "posts"
    shutil.copytree(SAMPLE / "posts", posts)
    new = sorted(posts.glob("*.html"))[-1]
    held_back = new.read_text()
    new.unlink()
    data = tmp_path / "data"

    first, states = run_ingest([str(posts)], data)
    assert len(first["added"]) == N_SAMPLE - 1
    assert states == Counter(
        {
            ("clean_page", "Completed"): N_SAMPLE - 1,
            ("list_local", "Completed"): 1,
            ("store_articles", "Completed"): 1,
        }
    )

    again, states = run_ingest([str(posts)], data)
    assert (again["added"], again["updated"], again["unchanged"]) == ([], [], N_SAMPLE - 1)
    assert states[("clean_page", "Cached")] == N_SAMPLE - 1
    assert states[("clean_page", "Completed")] == 0

    new.write_text(held_back)
    third, states = run_ingest([str(posts)], data)
    assert len(third["added"]) == 1 and third["unchanged"] == N_SAMPLE - 1
    assert states[("clean_page", "Completed")] == 1
    assert states[("clean_page", "Cached")] == N_SAMPLE - 1


def links_feed(site, names: list[str]) -> str:
    """An RSS feed whose items only link to the pages (each needs its own fetch)."""
    items = "".join(
        f"<item><title>{n}</title><link>{site.url_for('/posts/' + n)}</link></item>" for n in names
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
        f"<link>{site.url}</link>{items}</channel></rss>"
    )


def test_over_http_only_new_pages_are_fetched_and_cleaned(site, tmp_path):
    profile = tmp_path / "fast.yaml"
    profile.write_text("scrape:\n  per_host_delay_s: 0\n  backoff_base_s: 0.01\n")
    names = sorted(p.name for p in (SAMPLE / "posts").glob("*.html"))
    site.serve_dir(SAMPLE)
    site.add(
        "/links.xml", links_feed(site, names[:-1]), content_type="application/rss+xml", etag='"v1"'
    )
    feed, data = site.url_for("/links.xml"), tmp_path / "data"

    def run():
        with results_in(data):
            state = ingest([feed], str(profile), str(data), return_state=True)
        return state.result(), task_states(state)

    first, states = run()
    assert len(first["added"]) == N_SAMPLE - 1
    assert states[("fetch_url", "Completed")] == N_SAMPLE  # the feed + every page
    assert all(site.count(f"/posts/{n}") == 1 for n in names[:-1])

    again, states = run()
    assert again["unchanged"] == N_SAMPLE - 1
    assert states[("fetch_url", "Cached")] == N_SAMPLE - 1
    assert states[("fetch_url", "Completed")] == 1  # the feed itself is always re-validated
    assert site.requests_for("/links.xml")[-1].headers.get("if-none-match")
    assert all(site.count(f"/posts/{n}") == 1 for n in names[:-1])

    site.add("/links.xml", links_feed(site, names), content_type="application/rss+xml", etag='"v2"')
    third, states = run()
    assert len(third["added"]) == 1
    assert states[("fetch_url", "Completed")] == 2  # the feed and the new page
    assert states[("clean_page", "Completed")] == 1
    assert states[("clean_page", "Cached")] == N_SAMPLE - 1
    assert site.count(f"/posts/{names[-1]}") == 1


def test_pages_in_any_encoding_are_read_as_a_browser_reads_them(site, tmp_path):
    """Issue 15: a Latin-1 page was stored with U+FFFD for its accents, and a UTF-16 file
    was skipped with no reason given."""
    words = " ".join(["Le café crème du matin, déjà servi à l'élève."] * 20)

    def page(title: str, head: str = "") -> str:
        return f"<html><head>{head}<title>{title}</title></head><body><article>" \
               f"<h1>{title}</h1><p>{title}: {words}</p></article></body></html>"  # fmt: skip

    site.add("/header", page("Über das Café").encode("latin-1"),
             content_type="text/html; charset=ISO-8859-1")  # fmt: skip
    folder = tmp_path / "posts"
    folder.mkdir()
    meta = '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
    (folder / "meta.html").write_bytes(page("Déjà vu", meta).encode("latin-1"))
    (folder / "bare.html").write_bytes(page("Crème brûlée à la française").encode("cp1252"))
    (folder / "utf16.html").write_bytes(page("Café in UTF-16").encode("utf-16"))
    (folder / "plain.md").write_text(f"# Élan\n\nÉlan: {words}\n", encoding="utf-8")
    summary, _ = run_ingest([site.url_for("/header"), str(folder)], tmp_path / "data")
    assert summary["skipped"] == [] and summary["failures"] == []
    articles = {a["title"]: a["plain"] for a in read_articles(tmp_path / "data")}
    assert sorted(articles) == sorted(
        ["Über das Café", "Déjà vu", "Crème brûlée à la française", "Café in UTF-16", "Élan"]
    )
    for title, plain in articles.items():
        assert f"{title}: Le café crème du matin, déjà servi à l'élève." in plain
        assert "\ufffd" not in plain


def test_the_feed_and_the_pages_give_the_same_articles(site, tmp_path):
    site.serve_dir(SAMPLE)
    from_feed, _ = run_ingest([site.url_for("/feed.xml")], tmp_path / "a")
    from_pages, _ = run_ingest([str(SAMPLE / "posts")], tmp_path / "b")
    assert from_feed["total"] == from_pages["total"] == N_SAMPLE
    by_feed = {a["id"]: a for a in read_articles(tmp_path / "a")}
    by_page = {a["id"]: a for a in read_articles(tmp_path / "b")}
    assert by_feed.keys() == by_page.keys()
    for key, article in by_page.items():
        for field in ("title", "author", "published", "url", "markdown", "plain"):
            assert by_feed[key][field] == article[field], (article["title"], field)


def test_a_bad_source_is_reported_and_the_rest_goes_on(site, tmp_path):
    site.add("/gone.html", "no", status=404)
    summary, _ = run_ingest(
        [site.url_for("/gone.html"), str(SAMPLE / "posts"), str(tmp_path / "missing")],
        tmp_path / "data",
    )
    assert summary["total"] == N_SAMPLE
    failed = {f["item"]: f["error"] for f in summary["failures"]}
    assert "404" in failed[site.url_for("/gone.html")]
    assert str(tmp_path / "missing") in failed[str(tmp_path / "missing")]


def test_pgpt_run_prints_the_dataset_summary_and_publishes_artifacts(tmp_path, tiny_profile):
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["--data-dir", str(data), "run", "--profile", tiny_profile])
    assert result.exit_code == 0, result.output
    for word in ("Ingest", "Dataset (12 articles)", "train", "valid", "test", "train.jsonl"):
        assert word in result.output, word
    usd = json.loads((data / "jsonl" / "stats.json").read_text())["cost_estimate"]["usd"]
    assert f"${usd:.2f}" in result.output
    dataset = latest_artifact("pgpt-dataset")
    assert dataset["type"] == "markdown" and f"{N_SAMPLE} |" in dataset["data"]
    articles = latest_artifact("pgpt-articles")
    assert articles["type"] == "table" and "The Case for Boring Databases" in articles["data"]
    model_id = current_model(data)
    assert f"Fine-tuned {model_id}: 3 steps" in " ".join(result.output.split())
    assert latest_artifact("pgpt-finetune")["data"].count(model_id) >= 1
    assert (data / "models" / model_id / "loss.png").read_bytes()[:4] == b"\x89PNG"

    plain = "Title\nA first paragraph.\nA second one."
    formatted = CliRunner().invoke(
        app, ["--data-dir", str(data), "format", "-", "--profile", tiny_profile], input=plain
    )
    assert formatted.exit_code == 0, formatted.output
    assert formatted.stdout.strip()  # the tiny model's (random) Markdown ...
    assert markdown_to_plain(formatted.stdout) == plain  # ... with the input's words (faithful)
    text = " ".join(result.output.split())
    for words in ("Evaluation on 3 test chunks", "finetuned_raw", "Champion/challenger"):
        assert words in text, words
    evaluation = latest_artifact("pgpt-evaluation")
    assert evaluation["type"] == "table" and model_id in evaluation["data"]


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["export"], "/parquet/articles.parquet: run `pgpt ingest SOURCE` first"),
        (["finetune"], "/jsonl/train.jsonl not found: run `pgpt export` first"),
        (["evaluate"], "/models/current.json): run `pgpt finetune` or pass --model"),
        (["evaluate", "--model", "any"], "/jsonl/test.jsonl not found: run `pgpt export` first"),
        (["format", "-"], "/models/current.json): run `pgpt finetune` or pass --model"),
    ],
)
def test_a_step_before_its_inputs_is_one_line_naming_them(tmp_path, command, said):
    """Each command checks its inputs before any flow starts: one line, no traceback."""
    args = ["--data-dir", str(tmp_path), *command]
    result = CliRunner().invoke(app, args, input="Title")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pgpt {command[0]}: "), lines
    assert f"{tmp_path}{said}" in lines[0], lines


@pytest.mark.parametrize("wrong", ["data dir is a file", "junk bytes", "another table"])
def test_unreadable_articles_are_one_line_naming_them(tmp_path, wrong):
    """Not ArrowInvalid, KeyError: 'id' or "no articles": which file, and how to rebuild it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data, path = tmp_path / "data", tmp_path / "data" / "parquet" / "articles.parquet"
    path.parent.mkdir(parents=True)
    if wrong == "data dir is a file":
        data = tmp_path / "notes.txt"
        data.write_text("not a folder")
        said = f"--data-dir {data} is a file"
    elif wrong == "junk bytes":
        path.write_bytes(b"PAR1 not really")
        said = f"{path} is not a Parquet file"
    else:
        pq.write_table(pa.table({"url": ["https://example.com"]}), path)
        said = f"{path} is not an articles table (no 'id' column)"
    result = CliRunner().invoke(app, ["--data-dir", str(data), "export"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pgpt export: {said}"), lines
    assert wrong == "data dir is a file" or "`pgpt ingest SOURCE`" in lines[0]


def test_one_article_is_one_line_saying_how_many_are_needed(tmp_path):
    """Issue 15: one ingested article gave "no training examples" with a traceback."""
    from tasks.store import store_articles

    post = {"id": "a1", "source": "s", "url": "u", "title": "T", "html_sha256": "h",
            "markdown": "# T\n\nText.", "plain": "T\n\nText."}  # fmt: skip
    store_articles.fn([post], str(tmp_path))
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "export"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "1 article in" in lines[0], lines
    assert "needs at least 2 (one is held out to test it" in lines[0]


def test_a_flow_run_without_its_inputs_fails_with_the_same_words(tmp_path):
    """In a deployment or worker (no CLI), the flow itself refuses with that message."""
    from core.errors import MissingInput
    from flows.finetune import finetune

    with pytest.raises(MissingInput, match=r"train\.jsonl not found: run `pgpt export` first"):
        finetune(data_dir=str(tmp_path))


@pytest.mark.parametrize("source", ["", "   ", "no-such-folder"])
def test_a_source_that_means_nothing_is_one_line(tmp_path, monkeypatch, source):
    """An unset ``$DIR`` (``pgpt ingest ""``) used to ingest the current folder and exit 0."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "post.md").write_text("# A post in the current folder\n\nIts text.\n")
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "data"), "ingest", source])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pgpt ingest: source {source!r} "), lines
    assert "a source is an http(s) URL" in lines[0]
    assert not (tmp_path / "data").exists()


def test_an_empty_source_fails_the_ingest_flow_too(tmp_path, monkeypatch):
    from core.errors import BadInput
    from flows.ingest import ingest

    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match="source '' is empty"):
        ingest([""], data_dir=str(tmp_path / "data"))


def test_pgpt_without_a_prefect_server_runs_quietly(tmp_path):
    """A user's first command: no PREFECT_API_URL, so Prefect starts a temporary server; the
    output is our table, with no telemetry error or shutdown traceback from that server."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    command = [sys.executable, "-m", "pgpt", "--data-dir", str(tmp_path / "data"), "ingest"]
    done = subprocess.run(
        [*command, str(SAMPLE / "posts")], env=env, capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Ingest" in done.stdout and len(read_articles(tmp_path / "data")) == N_SAMPLE
    assert "Traceback" not in output and "| ERROR" not in output, output


def test_pgpt_format_of_an_unreadable_file_is_one_line(tmp_path) -> None:
    latin1 = tmp_path / "notes.txt"
    latin1.write_bytes("Caf\xe9 notes".encode("latin-1"))
    for path, reason in ((tmp_path / "missing.txt", "No such file"), (latin1, "not UTF-8")):
        args = ["--data-dir", str(tmp_path), "format", str(path), "--model", "any"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and reason in lines[0], lines


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "finetune:\n  scaffold: llm\n",
            "finetune.scaffold: Input should be 'none', 'rules' or 'author'",
        ),
        ("finetune: [1\n", "not YAML"),
        (None, "unknown profile"),
        ("examples:\n  chunk_tokens: -5\n", "examples.chunk_tokens: Input should be greater"),
        ("examples:\n  test_fraction: 1.5\n", "examples.test_fraction: Input should be less"),
        ("finetune:\n  epochs: 0\n", "finetune.epochs: Input should be greater than 0"),
        ("- examples\n- finetune\n", "holds a YAML list, not a mapping of sections"),
    ],
)
def test_a_bad_profile_is_one_line_before_any_flow_starts(tmp_path, text, said) -> None:
    profile = tmp_path / "bad.yaml"
    if text is not None:
        profile.write_text(text)
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "export", "-p", str(profile)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(profile) in lines[0] and said in lines[0], lines
    assert not (tmp_path / "jsonl").exists()
