"""``server``: OpenAI's REST API over the local model, through the real SDK.

Real HTTP on 127.0.0.1 (uvicorn in a thread), the real ``openai`` client, the tiny random
Llama (``tiny_model``) as the base model, and real trainer subprocesses: a job is uploaded,
validated, trained and chatted with; a second one is cancelled while it runs; a restarted
server finds everything again; a job cut off by a server stop is resumed by the next server.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from backends.local import LocalBackend
from config.settings import load_settings
from server.app import create_app, serve_in_thread

from tinymodel import chat

SYSTEM = "You render plain text into markdown format."
PAIRS = [
    ("Why I write", "# Why I write"),
    ("A list item\nAnother item", "- A list item\n- Another item"),
    ("Bold claims need proof.", "**Bold claims** need proof."),
    ("Use the print function.", "Use the `print` function."),
    ("A quote from a friend", "> A quote from a friend"),
    ("Getting started", "## Getting started"),
    ("This matters a lot.", "This *matters* a lot."),
    ("First step\nSecond step", "1. First step\n2. Second step"),
    ("Notes on tools", "### Notes on tools"),
    ("Read the docs first.", "Read the **docs** first."),
    ("Small steps win", "## Small steps win"),
    ("Keep it simple.", "Keep it *simple*."),
]
PLAIN = "Hello world\n\nThis is plain text."
TERMINAL = ("succeeded", "failed", "cancelled")
MAX_BODY = 100_000  # bytes: small, so the 413 tests send little


def chat_line(plain: str, markdown: str) -> str:
    """One training example as a JSONL line."""
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": plain},
        {"role": "assistant", "content": markdown},
    ]
    return json.dumps({"messages": messages})


def write_jsonl(path: Path, lines: list[str]) -> Path:
    """Write the lines (and a final newline)."""
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_settings(root: Path, tiny_model: Path, max_steps: int | None = 3) -> Any:
    """Settings for the tiny model: a few steps, a checkpoint after each, one thread."""
    profile = root / "server.yaml"
    steps = "null" if max_steps is None else max_steps
    profile.write_text(
        f"finetune:\n  base_model: {tiny_model}\n  epochs: 1\n  max_steps: {steps}\n"
        "  batch_size: 2\n  checkpoint_every: 1\n  max_seq_tokens: 256\n  threads: 1\n"
        f"serve:\n  max_body_bytes: {MAX_BODY}\n  max_tokens: 64\n"
    )
    return load_settings(str(profile), data_dir=root / "data")


def wait_for(
    client: openai.OpenAI, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout=90
) -> Any:
    """Poll a job until its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.1)
    raise TimeoutError(f"{job_id} is still {job.status}")


class Live:
    """A server over one data dir that a test can restart (a new app on the same data)."""

    def __init__(self, settings: Any, api_key: str | None = None) -> None:
        self.settings = settings
        self.api_key = api_key
        self.stack = ExitStack()
        self.start()

    def start(self) -> None:
        """A new app, served in a thread."""
        self.app = create_app(self.settings, api_key=self.api_key)
        self.url = self.stack.enter_context(serve_in_thread(self.app))
        self.client = openai.OpenAI(base_url=self.url, api_key=self.api_key or "-", max_retries=0)

    def stop(self) -> None:
        """Stop the server (and its training worker)."""
        self.stack.close()

    def restart(self) -> None:
        """Stop, then start a new app on the same data dir."""
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_model) -> Iterator[Live]:
    """A server with one fine-tune trained through the API (file, job, model)."""
    root = tmp_path_factory.mktemp("server")
    server = Live(make_settings(root, tiny_model))
    train = write_jsonl(root / "train.jsonl", [chat_line(p, m) for p, m in PAIRS])
    valid = write_jsonl(root / "valid.jsonl", [chat_line(p, m) for p, m in PAIRS[:2]])
    client = server.client
    server.train_file = client.files.create(file=train, purpose="fine-tune")
    server.valid_file = client.files.create(file=valid, purpose="fine-tune")
    created = client.fine_tuning.jobs.create(
        model="tiny-model0",
        training_file=server.train_file.id,
        validation_file=server.valid_file.id,
        suffix="blog",
        seed=7,
        metadata={"run": "first"},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 2}},
        },
    )
    server.created = created
    server.job = wait_for(client, created.id)
    yield server
    server.stop()


# --- files ----------------------------------------------------------------------------------


def test_upload_list_retrieve_content_delete(live):
    client = live.client
    data = b'{"anything": 1}\n'
    first = client.files.create(file=("notes.jsonl", data), purpose="user_data")
    second = client.files.create(file=("more.jsonl", data + data), purpose="user_data")
    assert (first.object, first.filename, first.bytes, first.status) == (
        "file",
        "notes.jsonl",
        len(data),
        "processed",
    )
    assert client.files.retrieve(first.id) == first
    assert client.files.content(first.id).content == data
    ours = [f.id for f in client.files.list(purpose="user_data")]
    assert ours == [second.id, first.id]  # newest first
    page = client.files.list(limit=1, purpose="user_data")
    assert [f.id for f in page.data] == [second.id] and page.has_more
    assert [f.id for f in client.files.list(limit=1, after=second.id, purpose="user_data")] == [
        first.id
    ]
    assert [f.id for f in client.files.list(order="asc", purpose="user_data")] == [
        first.id,
        second.id,
    ]
    stored = Path(live.settings.data_dir) / "server" / "files" / first.id
    assert stored.read_bytes() == data
    deleted = client.files.delete(first.id)
    assert (deleted.id, deleted.deleted) == (first.id, True)
    assert not stored.exists()
    with pytest.raises(openai.NotFoundError) as e:
        client.files.retrieve(first.id)
    assert e.value.status_code == 404 and e.value.code == "file_not_found"
    assert live.train_file.status == "processed" and live.train_file.status_details is None


def test_invalid_fine_tune_file_names_the_line(live, tmp_path):
    client = live.client
    lines = [chat_line(p, m) for p, m in PAIRS]
    lines[2] = json.dumps({"messages": [{"role": "bot", "content": "hi"}]})
    bad = client.files.create(file=write_jsonl(tmp_path / "bad.jsonl", lines), purpose="fine-tune")
    assert bad.status == "error"
    assert (
        bad.status_details == "Invalid file format: line 3: message 1 has unrecognized role 'bot'"
    )
    not_json = client.files.create(file=("x.jsonl", b"{}\n\n{oops\n"), purpose="fine-tune")
    assert not_json.status == "error" and "line 3: not valid JSON" in not_json.status_details

    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=bad.id)
    assert job.status == "validating_files"
    job = wait_for(client, job.id)
    assert job.status == "failed" and job.fine_tuned_model is None
    assert (job.error.code, job.error.param) == ("invalid_training_file", "training_file")
    assert "line 3: message 1 has unrecognized role 'bot'" in job.error.message
    events = client.fine_tuning.jobs.list_events(job.id).data
    assert events[0].level == "error" and "line 3" in events[0].message

    few = client.files.create(
        file=("few.jsonl", "\n".join(lines[:2] + lines[3:4]).encode()), purpose="fine-tune"
    )
    assert few.status == "processed"  # three good lines ... but too few to train on
    job = wait_for(
        client, client.fine_tuning.jobs.create(model="tiny-model0", training_file=few.id).id
    )
    assert job.status == "failed" and "at least 10 examples" in job.error.message


# --- fine-tuning ----------------------------------------------------------------------------


def test_job_succeeds_with_model_events_and_checkpoints(live):
    client, job = live.client, live.job
    assert live.created.status == "validating_files" and live.created.fine_tuned_model is None
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:tiny-model0:personal:blog:{job.id[6:14]}"
    assert job.id.startswith("ftjob-") and job.model == "tiny-model0"
    assert job.seed == 7 and job.metadata == {"run": "first"}
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 2
    assert job.hyperparameters.learning_rate_multiplier == 2
    assert job.finished_at >= job.created_at and job.estimated_finish is None
    run_dir = Path(live.settings.data_dir) / "models" / job.id
    record = json.loads((run_dir / "model.json").read_text())
    assert job.trained_tokens == record["tokens_seen"] > 0
    spec = json.loads((run_dir / "job.json").read_text())
    assert spec["settings"]["learning_rate"] == 2 * live.settings.finetune.learning_rate
    assert (spec["settings"]["epochs"], spec["settings"]["seed"]) == (2, 7)
    [results] = job.result_files
    result = client.files.retrieve(results)
    assert result.purpose == "fine-tune-results"
    csv = client.files.content(results).text.splitlines()
    assert csv[0].startswith("step,epoch,train_loss,valid_loss") and len(csv) == 1 + 3

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert events[0].message == "The job has successfully completed"
    assert events[-1].message == f"Created fine-tuning job: {job.id}"
    created = [e.created_at for e in events]
    assert created == sorted(created, reverse=True)  # newest first
    steps = [e.data for e in events if e.type == "metrics" and "valid_loss" not in e.data]
    assert [d["step"] for d in steps] == [3, 2, 1] and {d["total_steps"] for d in steps} == {3}
    assert all(d["train_loss"] > 0 for d in steps)
    valid = [e.data for e in events if e.type == "metrics" and "valid_loss" in e.data]
    assert valid and all(d["valid_loss"] > 0 for d in valid)
    # pagination: `after` = an event id -> the events older than it
    first = client.fine_tuning.jobs.list_events(job.id, limit=3)
    assert [e.id for e in first.data] == [e.id for e in events[:3]] and first.has_more
    rest = client.fine_tuning.jobs.list_events(job.id, limit=3, after=first.data[-1].id)
    assert [e.id for e in rest.data] == [e.id for e in events[3:6]]
    last = client.fine_tuning.jobs.list_events(job.id, limit=100, after=events[-2].id)
    assert [e.id for e in last.data] == [events[-1].id] and not last.has_more

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [2, 1]  # none after the last step
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-2"
    assert checkpoints[0].object == "fine_tuning.job.checkpoint"
    assert checkpoints[0].metrics.train_loss == steps[1]["train_loss"]

    listed = client.fine_tuning.jobs.list(metadata={"run": "first"}).data
    assert [j.id for j in listed] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"run": "other"}).data == []
    models = [m.id for m in client.models.list()]
    assert models[:2] == ["tiny-model0", job.fine_tuned_model]
    assert client.models.retrieve(job.fine_tuned_model).owned_by == "personal"


def test_cancel_a_running_job_kills_its_trainer(live):
    client = live.client
    job = client.fine_tuning.jobs.create(model="tiny-model0", training_file=live.train_file.id)
    wait_for(client, job.id, ("running",))
    with pytest.raises(openai.BadRequestError) as e:  # an unfinished job trains on it
        client.files.delete(live.train_file.id)
    assert e.value.code == "file_in_use"
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    worker = live.app.state.pgpt.worker
    deadline = time.monotonic() + 10
    while worker.current is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.current is None  # the trainer was killed, not waited for (~5 s)
    run_dir = Path(live.settings.data_dir) / "models" / job.id
    assert not (run_dir / "model.json").exists()
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    assert client.fine_tuning.jobs.list_events(job.id).data[0].message == "The job was cancelled."
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.cancel(job.id)
    assert e.value.code == "job_not_cancellable"
    assert client.fine_tuning.jobs.list(limit=1).data[0].id == job.id  # newest first


def test_failed_training_quotes_the_trainer_stderr(live, tmp_path):
    """Examples that max_seq_tokens (256) cuts before the answer: the trainer exits with 1."""
    long_system = "You render plain text into markdown format. " * 60
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": long_system},
                    {"role": "user", "content": p},
                    {"role": "assistant", "content": m},
                ]
            }
        )
        for p, m in PAIRS
    ]
    upload = live.client.files.create(
        file=write_jsonl(tmp_path / "long.jsonl", lines), purpose="fine-tune"
    )
    assert upload.status == "processed"  # valid chat data ... that this trainer cannot use
    job = live.client.fine_tuning.jobs.create(model="tiny-model0", training_file=upload.id)
    job = wait_for(live.client, job.id)
    assert job.status == "failed" and job.error.code == "training_failed"
    assert job.error.message.startswith("Training exited with code 1:")
    assert "no training example with a target token" in job.error.message
    assert job.fine_tuned_model is None and job.finished_at is not None


def test_create_job_refuses_unknown_model_and_file(live):
    client = live.client
    with pytest.raises(openai.NotFoundError) as e:
        client.fine_tuning.jobs.create(model="gpt-9", training_file=live.train_file.id)
    assert e.value.code == "model_not_found" and e.value.param == "model"
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model=live.job.fine_tuned_model, training_file="x")
    assert e.value.code == "model_not_available"
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(model="tiny-model0", training_file="file-nope")
    assert e.value.param == "training_file" and e.value.code == "file_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.fine_tuning.jobs.create(
            model="tiny-model0", training_file=live.train_file.id, suffix="a:b"
        )
    assert e.value.param == "suffix"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.list_events("ftjob-nope")


# --- chat -----------------------------------------------------------------------------------


def test_chat_matches_the_local_backend_and_streams_the_same_text(live):
    client, model = live.client, live.job.fine_tuned_model
    answer = client.chat.completions.create(model=model, messages=chat(PLAIN))
    [choice] = answer.choices
    assert answer.object == "chat.completion" and answer.model == model
    assert choice.message.role == "assistant" and choice.message.content
    local = LocalBackend(live.settings.data_dir, live.settings.finetune)
    assert local.complete(live.job.id, [chat(PLAIN)]) == [choice.message.content]
    usage = answer.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens > len(PLAIN.split())

    chunks = list(
        client.chat.completions.create(
            model=model, messages=chat(PLAIN), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 3  # token by token, not one chunk at the end
    assert "".join(texts) == choice.message.content
    assert chunks[-2].choices[0].finish_reason == choice.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == usage


def test_max_tokens_stop_and_seed(live):
    client, model = live.client, live.job.fine_tuned_model
    short = client.chat.completions.create(model=model, messages=chat(PLAIN), max_tokens=5)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 5
    capped = client.chat.completions.create(model=model, messages=chat(PLAIN), max_tokens=10_000)
    assert capped.usage.completion_tokens <= 64  # serve.max_tokens

    full = client.chat.completions.create(model=model, messages=chat(PLAIN), max_tokens=40)
    text = full.choices[0].message.content
    start = next(
        i for i in range(12, len(text)) if text[i : i + 3].isascii() and text[i : i + 3].isalnum()
    )
    stop = text[start : start + 3]
    cut = text[: text.find(stop)]
    stopped = client.chat.completions.create(
        model=model, messages=chat(PLAIN), max_tokens=40, stop=[stop, "never-there"]
    )
    assert stopped.choices[0].message.content == cut
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.usage.completion_tokens < 40  # generation ended at the stop string
    streamed = client.chat.completions.create(
        model=model, messages=chat(PLAIN), max_tokens=40, stop=stop, stream=True
    )
    parts = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    assert "".join(parts) == cut

    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model=model, messages=chat(PLAIN), temperature=1.0, seed=seed, max_tokens=20
        )
        return reply.choices[0].message.content

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    assert sample(1) != text[: len(sample(1))]  # sampling, not greedy


def test_faithful_extension_keeps_the_input_words(live):
    client, model = live.client, live.job.fine_tuned_model

    def words(s: str) -> str:
        return "".join(c for c in s if not c.isspace() and c not in "#*_>`-+|:.\\0123456789")

    raw = client.chat.completions.create(model=model, messages=chat(PLAIN)).choices[0]
    assert words(raw.message.content) != words(PLAIN)  # the random model invents text ...
    faithful = client.chat.completions.create(
        model=model, messages=chat(PLAIN), extra_body={"faithful": True}
    ).choices[0]
    assert words(faithful.message.content) == words(PLAIN)  # ... unless it is constrained
    assert faithful.finish_reason == "stop", faithful.message.content  # input used up: the end
    chunks = client.chat.completions.create(
        model=model, messages=chat(PLAIN), extra_body={"faithful": True}, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == faithful.message.content


def test_base_model_is_served_too(live):
    reply = live.client.chat.completions.create(
        model="tiny-model0", messages=chat(PLAIN), max_tokens=8
    )
    assert reply.usage.completion_tokens == 8 and reply.model == "tiny-model0"


# --- errors ---------------------------------------------------------------------------------


def test_errors_are_openai_shaped(live):
    client = live.client
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nope", messages=chat(PLAIN))
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    assert (
        e.value.body["message"]
        == "The model `gpt-nope` does not exist or you do not have access to it."
    )
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-nope")
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-model0", messages=chat(PLAIN), n=2)
    assert e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-model0", messages=chat(PLAIN), logprobs=True)
    assert e.value.param == "logprobs"

    url = live.url
    with httpx.Client(timeout=30) as http:
        bad = http.post(
            f"{url}/chat/completions",
            content=b'{"model": "x", "messages": [',
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
        error = bad.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error" and error["param"] is None
        assert "parse the JSON body" in error["message"]

        missing = http.post(f"{url}/chat/completions", json={"model": "tiny-model0"})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
        typed = http.post(
            f"{url}/chat/completions",
            json={"model": "tiny-model0", "messages": chat(PLAIN), "temperature": "hot"},
        )
        assert typed.status_code == 400 and typed.json()["error"]["param"] == "temperature"
        unknown = http.post(
            f"{url}/chat/completions",
            json={"model": "tiny-model0", "messages": chat(PLAIN), "foo": 1},
        )
        assert unknown.status_code == 400
        assert unknown.json()["error"] == {
            "message": "Unrecognized request argument supplied: foo",
            "type": "invalid_request_error",
            "param": "foo",
            "code": "unknown_parameter",
        }
        nowhere = http.get(f"{url}/nowhere")
        assert nowhere.status_code == 404 and nowhere.json()["error"]["message"].startswith(
            "Invalid URL"
        )

        big = {"model": "tiny-model0", "messages": chat("x" * (MAX_BODY + 1))}
        declared = http.post(f"{url}/chat/completions", json=big)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
            yield b'{"model": "tiny-model0", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"y" * 10_000
            yield b'"}]}'

        streamed = http.post(
            f"{url}/chat/completions",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert streamed.status_code == 413
        assert streamed.json()["error"]["type"] == "invalid_request_error"


def test_bearer_auth(tmp_path, tiny_model):
    key = "sk-test-" + "s3cret" * 4
    server = Live(make_settings(tmp_path, tiny_model), api_key=key)
    try:
        assert [m.id for m in server.client.models.list()] == ["tiny-model0"]
        server.client.files.create(file=("a.jsonl", b"{}\n"), purpose="user_data")
        wrong = openai.OpenAI(base_url=server.url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            wrong.models.list()
        assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
        assert e.value.body["type"] == "invalid_request_error" and e.value.body["param"] is None
        bare = httpx.get(f"{server.url}/models")
        assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    finally:
        server.stop()
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert key.encode() not in stored  # not in SQLite (or its WAL), files or logs


# --- restart and resume ---------------------------------------------------------------------


def test_restarted_server_finds_files_jobs_and_models(live):
    client = live.client
    models_before = [m.id for m in client.models.list()]
    files_before = [f.id for f in client.files.list()]
    jobs_before = [(j.id, j.status) for j in client.fine_tuning.jobs.list()]
    events_before = [e.id for e in client.fine_tuning.jobs.list_events(live.job.id, limit=100)]
    answer = client.chat.completions.create(model=live.job.fine_tuned_model, messages=chat(PLAIN))
    live.restart()
    client = live.client
    assert [f.id for f in client.files.list()] == files_before
    assert [(j.id, j.status) for j in client.fine_tuning.jobs.list()] == jobs_before
    assert [e.id for e in client.fine_tuning.jobs.list_events(live.job.id, limit=100)] == (
        events_before
    )
    assert [m.id for m in client.models.list()] == models_before
    assert live.job.fine_tuned_model in models_before
    again = client.chat.completions.create(model=live.job.fine_tuned_model, messages=chat(PLAIN))
    assert again.choices[0].message.content == answer.choices[0].message.content


def test_one_server_per_data_dir(live):
    second = create_app(live.settings)
    with pytest.raises(RuntimeError, match="already serving"), serve_in_thread(second):
        pass  # its lifespan refuses: the running server holds DATA/server/lock
    second.state.pgpt.close()
    assert next(m.id for m in live.client.models.list()) == "tiny-model0"  # the first goes on


def test_local_finetune_is_listed_under_its_own_id(live):
    """A ``pgpt finetune`` run folder (model.json + job.json) is a model of the server too."""
    models = Path(live.settings.data_dir) / "models"
    local_id = "tiny-model0-personal-0123456789ab"
    (models / local_id).mkdir()
    for name in ("model.json", "job.json", "adapter"):
        source = models / live.job.id / name
        target = models / local_id / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.write_bytes(source.read_bytes())
    assert local_id in [m.id for m in live.client.models.list()]
    reply = live.client.chat.completions.create(model=local_id, messages=chat(PLAIN), max_tokens=6)
    assert reply.usage.completion_tokens == 6


@pytest.mark.slow
def test_job_interrupted_by_a_server_stop_resumes_on_the_next_start(tmp_path, tiny_model):
    settings = make_settings(tmp_path, tiny_model, max_steps=None)
    train = write_jsonl(tmp_path / "train.jsonl", [chat_line(p, m) for p, m in PAIRS])
    server = Live(settings)
    try:
        client = server.client
        upload = client.files.create(file=train, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="tiny-model0", training_file=upload.id, hyperparameters={"n_epochs": 30}
        )
        deadline = time.monotonic() + 60
        while not client.fine_tuning.jobs.checkpoints.list(job.id).data:
            assert time.monotonic() < deadline, "no checkpoint in 60 s"
            time.sleep(0.02)
    finally:
        server.stop()
    db = sqlite3.connect(Path(settings.data_dir) / "server" / "state.sqlite3")
    [(status,)] = db.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchall()
    db.close()
    assert status == "running"  # left for the next server, not failed or lost
    run_dir = Path(settings.data_dir) / "models" / job.id
    assert not (run_dir / "model.json").exists()

    server = Live(settings)
    try:
        done = wait_for(server.client, job.id)
        assert done.status == "succeeded", done.error
        messages_ = [
            e.message for e in server.client.fine_tuning.jobs.list_events(job.id, limit=1000)
        ]
        assert any(m.startswith("The server stopped during training") for m in messages_)
        assert any(
            m.startswith("The server restarted while this job was running") for m in messages_
        )
        resumed = [m for m in messages_ if m.startswith("Resumed training from the checkpoint")]
        assert len(resumed) == 1
        record = json.loads((run_dir / "model.json").read_text())
        assert record["resumes"] == 1 and record["steps"] == 30 * 6
        assert done.fine_tuned_model in [m.id for m in server.client.models.list()]
    finally:
        server.stop()


def test_import_does_not_load_torch():
    code = "import sys, server.app; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"
