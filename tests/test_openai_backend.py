"""The openai backend against the project's own OpenAI-compatible server, over real HTTP.

The server (``server``) runs the tiny model on a free loopback port; the
backend talks to it through the real ``openai`` SDK. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.openai import BudgetError, OpenAIBackend, collect_metrics, translate_event
from config.settings import FinetuneSettings, load_settings
from core.chat_data import to_chat, write_jsonl
from core.markdown import markdown_to_plain
from tasks.evaluate import models_to_compare

from conftest import ROOT, SAMPLE
from tinymodel import chat

KEY = "sk-test-" + secrets.token_hex(16)  # a fresh secret: it must never be written anywhere
KEY_ENV = "PGPT_TEST_OPENAI_KEY"
SYSTEM = "You render plain text into markdown format."


def chat_examples(n: int, topic: str) -> list[dict]:
    """``n`` small chat examples: a heading, a sentence with emphasis, a two-item list."""
    out = []
    for i in range(n):
        markdown = (
            f"## {topic} note {i}\n\nThe *{topic}* entry number {i} is short.\n\n"
            f"- first point {i}\n- second point {i}"
        )
        out.append(to_chat(markdown_to_plain(markdown), markdown, SYSTEM))
    return out


def write_dataset(folder: Path, topic: str, n_train: int = 12) -> tuple[str, str]:
    """train.jsonl and valid.jsonl in ``folder``; their paths."""
    train, valid = folder / "train.jsonl", folder / "valid.jsonl"
    write_jsonl(train, chat_examples(n_train, topic))
    write_jsonl(valid, chat_examples(3, topic + " valid"))
    return str(train), str(valid)


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    """``pgpt serve``'s app on a free port, training the tiny model; (base URL, data dir)."""
    from server.app import create_app, serve_in_thread

    folder = tmp_path_factory.mktemp("server")
    profile = folder / "server.yaml"
    profile.write_text(
        f"finetune:\n  base_model: {tiny_model}\n  epochs: 1\n  batch_size: 2\n"
        "  max_seq_tokens: 512\n  checkpoint_every: 2\n"
    )
    settings = load_settings(str(profile), data_dir=folder / "data")
    with serve_in_thread(create_app(settings, api_key=KEY)) as base_url:
        yield base_url, folder / "data"


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def finetune_settings(base_url: str, tiny_model: Path, **overrides) -> FinetuneSettings:
    """FinetuneSettings for the openai backend pointed at the test server."""
    base = {
        "backend": "openai",
        "base_model": tiny_model.name,  # the server lists its base model under its folder name
        "epochs": 1,
        "openai": {
            "base_url": base_url,
            "api_key_env": KEY_ENV,
            "poll_s": 0.2,
            "poll_max_s": 1.0,
            "server_extensions": True,
        },
    }
    return FinetuneSettings.model_validate(base | overrides)


def server_jobs(backend: OpenAIBackend, training_file: str | None = None) -> list:
    jobs = list(backend.client.fine_tuning.jobs.list(limit=100))
    return [j for j in jobs if training_file is None or j.training_file == training_file]


def record_of(backend: OpenAIBackend, job_id: str) -> dict:
    return next(r for r in backend.records() if r.get("job_id") == job_id)


# --- pure parts -------------------------------------------------------------------------------


def test_events_translate_to_training_events():
    class Ev:
        def __init__(self, type_, data=None, message="", level="info"):
            self.type, self.data, self.message, self.level = type_, data, message, level

    step = Ev("metrics", {"step": 2, "total_steps": 9, "train_loss": 1.5})
    both = Ev("metrics", {"step": 3, "train_loss": 1.25, "valid_loss": 1.75})
    note = Ev("message", None, "Fine-tuning job started", "info")
    assert translate_event(step) == [
        {
            "type": "step",
            "step": 2,
            "total_steps": 9,
            "loss": 1.5,
            "tokens_per_s": None,
            "eta_s": None,
        }
    ]
    assert [e["type"] for e in translate_event(both)] == ["step", "valid"]
    assert translate_event(note) == [
        {"type": "status", "level": "info", "message": "Fine-tuning job started"}
    ]
    rows: list[dict] = []
    for event in translate_event(step) + translate_event(both):
        collect_metrics(event, rows)
    assert rows == [
        {"step": 2, "train_loss": 1.5, "tokens_per_s": None},
        {"step": 3, "train_loss": 1.25, "tokens_per_s": None, "valid_loss": 1.75},
    ]


def test_budget_refused_before_any_upload(tmp_path, monkeypatch):
    """Against OpenAI itself: over budget -> refused with the estimate; no request, no record."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a request would fail: no key
    train, valid = write_dataset(tmp_path, "budget", n_train=20)
    settings = finetune_settings("", Path("gpt-3.5-turbo"), epochs=3)
    settings.openai.base_url, settings.openai.max_cost_usd = None, 0.001
    backend = OpenAIBackend(tmp_path / "data", settings)
    with pytest.raises(BudgetError) as refused:
        backend.start_finetune(train, valid)
    message = str(refused.value)
    assert "over finetune.openai.max_cost_usd = $0.00" in message
    assert "x 3 epochs" in message and "nothing was uploaded" in message
    assert backend._client is None  # no client was ever made: nothing was sent
    assert backend.records() == []


def test_unknown_price_on_openai_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    train, _ = write_dataset(tmp_path, "price")
    settings = finetune_settings("", Path("my-own-model"))
    settings.openai.base_url = None
    with pytest.raises(ValueError, match="no training price for 'my-own-model'"):
        OpenAIBackend(tmp_path / "data", settings).start_finetune(train, None)


def test_missing_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = finetune_settings("", Path("gpt-4o-mini"))
    settings.openai.base_url, settings.openai.api_key_env = None, "OPENAI_API_KEY"
    with pytest.raises(ValueError, match="set OPENAI_API_KEY or name a Prefect Secret"):
        OpenAIBackend(tmp_path, settings).client  # noqa: B018


def test_openai_models_compared_only_when_available(tmp_path):
    conf = load_settings(data_dir=tmp_path)  # no train split
    conf.evaluate.openai_models = ["gpt-4o-mini"]
    one_shot = {"plain": "a", "reference": "*a*"}
    names = list(models_to_compare("new", None, conf, one_shot))
    assert names == ["identity", "ceiling", "rules", "base", "finetuned"]
    models = models_to_compare("new", None, conf, one_shot, openai_available=True)
    assert [(name, m.backend) for name, m in models.items()][-1] == ("gpt-4o-mini", "openai")
    assert "For example, this plain text:\n\na\n\nis rendered" in models["gpt-4o-mini"].system


# --- against the server -----------------------------------------------------------------------


def test_finetune_follow_and_chat(server, tiny_model, tmp_path, key_env):
    base_url, _ = server
    train, valid = write_dataset(tmp_path, "follow")
    backend = OpenAIBackend(tmp_path / "data", finetune_settings(base_url, tiny_model))
    job_id = backend.start_finetune(train, valid)
    assert backend.start_finetune(train, valid) == job_id  # the same job, not a second one
    record = record_of(backend, job_id)
    assert len(server_jobs(backend, record["training_file"])) == 1
    events: list[dict] = []
    job = backend.follow(job_id, on_event=events.append)
    assert job.status == "succeeded", job
    assert job.model_id.startswith(f"ft:{tiny_model.name}:personal:personal:")
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, steps[-1]["total_steps"] + 1))
    assert events[-1] == {"type": "end", "status": "succeeded", "model_id": job.model_id}
    assert record_of(backend, job_id)["status"] == "succeeded"
    from core.runs import RunFolder

    rows = RunFolder.of(backend.data_dir, job.model_id).read_metrics()
    assert [r["step"] for r in rows] == [float(e["step"]) for e in steps]
    assert rows[-1]["valid_loss"] is not None  # the server measured validation loss
    saved = json.loads(
        (RunFolder.of(backend.data_dir, job.model_id).path / "model.json").read_text()
    )
    assert saved["job_id"] == job_id and saved["steps"] == steps[-1]["step"]

    plain = markdown_to_plain(chat_examples(1, "follow")[0]["messages"][2]["content"])
    conversation = chat(plain)
    raw = backend.complete(job.model_id, [conversation, conversation])
    assert raw[0] == raw[1] and isinstance(raw[0], str)  # greedy: the same answer twice
    assert backend.usage["prompt_tokens"] > 0 and backend.usage["completion_tokens"] > 0
    assert backend.usage_cost(job.model_id) == 0.0  # not on OpenAI's price list
    faithful = backend.complete(job.model_id, [conversation], faithful=True)[0]
    # the server decoded under the constraint: the input's words, in order, only markup added
    # (the random tiny model spends its token budget on markup, so the answer may stop early)
    letters = re.compile(r"[^A-Za-z]")  # markup (and list numbers) may go anywhere
    kept = letters.sub("", faithful)
    assert len(kept) >= 10 and letters.sub("", plain).startswith(kept)


def test_follower_killed_mid_job_resumes_the_same_job(server, tiny_model, tmp_path, key_env):
    """A follower SIGKILLed after creating the job: the rerun follows it; one job in all."""
    base_url, _ = server
    train, valid = write_dataset(tmp_path, "crash")
    settings = finetune_settings(base_url, tiny_model, epochs=20)
    script = (
        "import sys\nfrom backends.openai import OpenAIBackend\n"
        "from config.settings import FinetuneSettings\n"
        "b = OpenAIBackend(sys.argv[1], FinetuneSettings.model_validate_json(sys.argv[2]))\n"
        "job = b.start_finetune(sys.argv[3], sys.argv[4])\n"
        "b.follow(job)\n"
    )
    data = tmp_path / "data"
    follower = subprocess.Popen(
        [sys.executable, "-c", script, str(data), settings.model_dump_json(), train, valid],
        cwd=ROOT,
        env={**os.environ, KEY_ENV: KEY},
    )
    backend = OpenAIBackend(data, settings)
    deadline = time.monotonic() + 60
    while not any(r.get("job_id") for r in backend.records()):
        assert follower.poll() is None and time.monotonic() < deadline, "no job recorded"
        time.sleep(0.1)
    follower.kill()
    follower.wait()
    recorded = backend.records()[0]["job_id"]
    assert backend.get_job(recorded).status not in ("cancelled", "failed")  # kill != cancel
    job_id = backend.start_finetune(train, valid)
    assert job_id == recorded
    assert backend.follow(job_id).status == "succeeded"
    assert len(server_jobs(backend, backend.records()[0]["training_file"])) == 1


def test_crash_between_create_and_record_adopts_the_job(server, tiny_model, tmp_path, key_env):
    base_url, _ = server
    train, valid = write_dataset(tmp_path, "adopt")
    backend = OpenAIBackend(tmp_path / "data", finetune_settings(base_url, tiny_model))
    # what a crash right after jobs.create leaves: files recorded, no job id
    key = backend.job_key(train, valid, "personal")
    record = {"key": key, "model": tiny_model.name, "suffix": "personal", "estimated_cost_usd": 0}
    record["training_file"] = backend.upload(train)
    backend._write_record(record)
    created = backend._create_job(record)
    assert backend.start_finetune(train, valid) == created.id
    assert len(server_jobs(backend, record["training_file"])) == 1


def test_interrupting_follow_cancels_the_job(server, tiny_model, tmp_path, key_env):
    base_url, _ = server
    train, valid = write_dataset(tmp_path, "interrupt")
    backend = OpenAIBackend(tmp_path / "data", finetune_settings(base_url, tiny_model, epochs=20))
    job_id = backend.start_finetune(train, valid)

    def stop(event: dict) -> None:
        raise KeyboardInterrupt  # Ctrl-C, or Prefect's TerminationSignal on cancellation

    with pytest.raises(KeyboardInterrupt):
        backend.follow(job_id, on_event=stop)
    assert backend.get_job(job_id).status == "cancelled"
    assert record_of(backend, job_id)["status"] == "cancelled"


def test_cancellation_hook_cancels_the_flow_runs_job(server, tiny_model, tmp_path, key_env):
    base_url, _ = server
    train, valid = write_dataset(tmp_path, "hook")
    backend = OpenAIBackend(tmp_path / "data", finetune_settings(base_url, tiny_model, epochs=20))
    job_id = backend.start_finetune(train, valid)
    backend._update_record(job_id, flow_run_id="run-1")
    assert backend.cancel_jobs_of_flow_run("run-2") == []
    assert backend.cancel_jobs_of_flow_run("run-1") == [job_id]
    assert backend.get_job(job_id).status == "cancelled"


def test_a_bad_file_is_refused_before_upload(server, tiny_model, tmp_path, key_env):
    """Invalid data stops at the estimate, naming the line: nothing uploaded, no job."""
    from core.chat_data import DatasetError

    base_url, _ = server
    train = tmp_path / "train.jsonl"
    rows = [*chat_examples(12, "bad"), {"messages": [{"role": "user"}]}]
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))  # write_jsonl refuses it
    backend = OpenAIBackend(tmp_path / "data", finetune_settings(base_url, tiny_model))
    files, jobs = len(list(backend.client.files.list())), len(server_jobs(backend))
    with pytest.raises(DatasetError, match=r"train\.jsonl line 13: message 1 has no 'content'"):
        backend.start_finetune(str(train), None)
    assert (len(list(backend.client.files.list())), len(server_jobs(backend))) == (files, jobs)
    assert backend.records() == []


def test_server_rejects_a_wrong_key(server, tiny_model, tmp_path, monkeypatch):
    import openai

    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    backend = OpenAIBackend(tmp_path, finetune_settings(server[0], tiny_model))
    with pytest.raises(openai.AuthenticationError):
        backend.get_job("ftjob-0")


@pytest.mark.slow
def test_retrain_flow_with_the_openai_backend(
    server, tiny_model, tmp_path, key_env, prefect_server
):
    """The whole pipeline, fine-tuning and evaluating through the server; the key stays secret."""
    import pandas as pd

    from config.runtime import results_in
    from flows.retrain import retrain

    base_url, server_data = server
    profile = tmp_path / "openai.yaml"
    profile.write_text(
        "examples:\n  chunk_tokens: 96\n"
        f"finetune:\n  backend: openai\n  base_model: {tiny_model.name}\n  epochs: 1\n"
        f"  openai:\n    base_url: {base_url}\n    api_key_env: {KEY_ENV}\n"
        "    poll_s: 0.2\n    poll_max_s: 1.0\n    server_extensions: true\n"
        "evaluate:\n  max_examples: 3\n  bootstrap_samples: 200\n"
    )
    data = tmp_path / "data"
    with results_in(data):
        result = retrain([str(SAMPLE / "posts")], str(profile), str(data))
    report = result["evaluate"]
    model_id = result["finetune"]["model_id"]
    assert model_id.startswith(f"ft:{tiny_model.name}:personal:")
    assert report["models"]["finetuned"]["model_id"] == model_id
    assert report["models"]["base"]["model_id"] == tiny_model.name
    assert set(report["models"]) == {
        *("identity", "ceiling", "rules", "author_rules"),
        *("base", "base_raw", "finetuned", "finetuned_raw"),
    }
    for name in ("base", "finetuned"):  # faithful through the server, then repaired
        assert report["models"][name]["text_cer"]["mean"] == 0.0
    metrics = json.loads((Path(report["report_dir"]) / "metrics.json").read_text())
    assert metrics["models"]["finetuned"]["model_id"] == model_id
    assert report["decision"]["promote"] is True
    runs = pd.read_parquet(data / "parquet" / "runs.parquet")
    assert runs["model_id"].tolist() == [model_id]
    from core.runs import current_model

    assert current_model(data) == model_id
    assert Path(result["finetune"]["loss_png"]).is_file()

    # the CLI on the same data: the fine-tune is cached (no second job), then format with it
    from typer.testing import CliRunner

    from pgpt import app

    cli = ["--data-dir", str(data)]
    finetuned = CliRunner().invoke(app, [*cli, "finetune", "--profile", str(profile)])
    assert finetuned.exit_code == 0, finetuned.output
    assert f"Fine-tuned {model_id}:" in " ".join(finetuned.output.split())
    backend = OpenAIBackend(data, load_settings(str(profile), data).finetune)
    assert len(server_jobs(backend, backend.records()[0]["training_file"])) == 1
    plain = "A title\nSome words to format."
    formatted = CliRunner().invoke(app, [*cli, "format", "-", "--profile", str(profile)], plain)
    assert formatted.exit_code == 0, formatted.output
    assert markdown_to_plain(formatted.stdout.strip()) == plain  # faithful, then repaired

    # the API key is in no file: not the data dirs, not Prefect's home or its database
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    places = [data, server_data, Path(os.environ["PREFECT_HOME"])]
    db_url = PREFECT_API_DATABASE_CONNECTION_URL.value() or ""
    if db_url.startswith("sqlite"):
        places.append(Path(db_url.split("///", 1)[1]).parent)
    leaks = [
        path
        for place in places
        for path in place.rglob("*")
        if path.is_file() and KEY.encode() in path.read_bytes()
    ]
    assert leaks == []
