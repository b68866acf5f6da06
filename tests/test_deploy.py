"""personal-gpt as a service: prefect.yaml deployed to a real server, runs executed by a real
process worker, triggered through the API as the UI's Run button does."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.runs import current_model
from tasks.store import read_runs

from conftest import ROOT, SAMPLE

pytest_plugins = ["servicefixture"]  # one server, worker and pair of runs for the session
pytestmark = pytest.mark.slow
N_SAMPLE = len(list((SAMPLE / "posts").glob("*.html")))


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_the_deployments_of_prefect_yaml(prefect_service):
    by_name = {d["name"]: d for d in prefect_service.post("/deployments/filter", {"limit": 50})}
    assert set(by_name) == {"retrain", "ingest", "evaluate"}
    schedules = {name: [s["schedule"] for s in d["schedules"]] for name, d in by_name.items()}
    assert schedules == {
        "retrain": [{"cron": "0 3 * * 1", "timezone": "UTC", "day_or": True}],
        "ingest": [{"cron": "0 2 * * *", "timezone": "UTC", "day_or": True}],
        "evaluate": [],
    }
    for name, deployment in by_name.items():
        assert deployment["work_pool_name"] == "pgpt-process", name
        assert "personal-gpt" in deployment["tags"], name
        assert deployment["entrypoint"] == f"flows/{name}.py:{name}"
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
        assert deployment["enforce_parameter_schema"] is True
    limits = {
        name: (d["global_concurrency_limit"] or {}).get("limit") for name, d in by_name.items()
    }
    assert limits == {"retrain": 1, "ingest": 1, "evaluate": None}
    assert by_name["retrain"]["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert by_name["ingest"]["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    # typed parameters: the UI's form (defaults, an enum for the backend, a list of sources)
    form = by_name["retrain"]["parameter_openapi_schema"]["properties"]
    assert list(form) == ["sources", "profile", "data_dir", "backend", "export_to"]
    assert form["export_to"]["default"] is None and "GGUF" in form["export_to"]["description"]
    assert form["profile"]["default"] == "default"
    assert form["sources"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}
    assert form["backend"]["anyOf"][0] == {"enum": ["local", "openai"], "type": "string"}
    assert form["backend"]["default"] is None and form["backend"]["description"]
    pool = prefect_service.get("/work_pools/pgpt-process")
    assert pool["type"] == "process"


def test_a_bad_parameter_is_refused_before_anything_runs(prefect_service):
    deployment = prefect_service.deployment("retrain")
    response = prefect_service.post_raw(
        f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"backend": "gpu"}}
    )
    assert response.status_code == 409
    assert "'gpu' is not one of ['local', 'openai']" in response.text


def test_retrain_runs_complete_and_publish_their_evaluation(deployed):
    first = deployed.runs[0]
    assert [run["state_type"] for run in deployed.runs] == ["COMPLETED", "COMPLETED"], (
        deployed.service.tail()
    )
    model_id = current_model(deployed.data_dir)
    assert model_id is not None
    subflows = deployed.service.subflow_runs(first["id"])
    assert set(subflows) == {"ingest", "export", "finetune", "evaluate"}
    artifacts = deployed.service.post(
        "/artifacts/filter",
        {
            "artifacts": {
                "key": {"any_": ["pgpt-evaluation"]},
                "flow_run_id": {"any_": [subflows["evaluate"]["id"]]},
            },
            "limit": 5,
        },
    )
    assert len(artifacts) == 1
    assert artifacts[0]["type"] == "table"
    table = json.loads(artifacts[0]["data"])
    rows = {row["model"]: row for row in table}
    assert {"identity", "base", "finetuned"} <= set(rows)
    assert rows["finetuned"]["model id"] == model_id
    # both runs went into the same data dir; each recorded its champion/challenger decision
    runs = read_runs(deployed.data_dir)
    assert [r["model_id"] for r in runs] == [model_id, model_id]
    # the artifact is the first run's report, as written to DATA/reports/<run id>/
    metrics = json.loads((Path(runs[0]["report"]) / "metrics.json").read_text())
    cer = metrics["models"]["finetuned"]["cer"]
    assert rows["finetuned"]["CER"] == f"{cer['mean']:.4f} [{cer['low']:.4f}, {cer['high']:.4f}]"


def test_a_second_run_waits_for_the_first_and_reuses_its_cache(deployed):
    first, second = deployed.runs  # by start time
    service = deployed.service
    assert when(second["start_time"]) >= when(first["end_time"])
    history = service.get(f"/flow_run_states/?flow_run_id={second['id']}")
    assert "AwaitingConcurrencySlot" in [state["name"] for state in history]
    # results persisted under DATA/prefect/results: the second run's work is all cached
    assert any((deployed.data_dir / "prefect" / "results").iterdir())
    subflows = service.subflow_runs(second["id"])
    tasks = service.task_runs([run["id"] for run in subflows.values()])
    counts = Counter((t["name"].rsplit("-", 1)[0], t["state_name"]) for t in tasks)
    assert counts[("clean_page", "Cached")] == N_SAMPLE
    assert counts[("clean_page", "Completed")] == 0
    assert counts[("finetune_model", "Cached")] == 1
    assert counts[("build_examples", "Cached")] == 1


TRAIN = """\
import json, sys
from flows.finetune import finetune
state = finetune(sys.argv[1], sys.argv[2], make_current=False, return_state=True)
print(json.dumps({"flow_run_id": str(state.state_details.flow_run_id), "ok": state.is_completed()}))
"""


def test_a_training_waits_while_another_holds_the_machines_slot(deployed, tmp_path):
    """While the training slot of this machine is taken, a fine-tune waits; then it trains."""
    import fcntl

    from flows.finetune import training_lock

    service, data = deployed.service, tmp_path / "data"
    shutil.copytree(deployed.data_dir / "jsonl", data / "jsonl")
    lines: queue.Queue[str] = queue.Queue()
    with training_lock().open("a") as held:  # hold the slot as another training would
        fcntl.flock(held, fcntl.LOCK_EX)
        process = subprocess.Popen(
            [sys.executable, "-c", TRAIN, deployed.profile, str(data)],
            cwd=ROOT,
            env=service.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout]).start()
        output = []
        while "waiting for the training slot" not in "".join(output):
            output.append(lines.get(timeout=120))
        time.sleep(3)  # the other training goes on: this one must still be waiting
        assert process.poll() is None, "".join(output)
        assert (data / "models").exists() is False
        released = datetime.now(UTC)
        fcntl.flock(held, fcntl.LOCK_UN)
    assert process.wait(timeout=180) == 0
    while not lines.empty():
        output.append(lines.get())
    result = json.loads(output[-1])
    assert result["ok"], "".join(output)
    training = [
        t for t in service.task_runs([result["flow_run_id"]]) if t["name"].startswith("finetune_")
    ]
    assert [t["state_name"] for t in training] == ["Completed"]
    assert when(training[0]["start_time"]) >= released


HOLD = """\
import fcntl, sys, time
from flows.finetune import training_lock
with training_lock().open("a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_killed_training_frees_the_slot():
    """A run SIGKILLed while training leaves no slot taken: the next one starts at once."""
    from flows.finetune import training_lock, training_slot

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "holding\n"
        import fcntl

        with training_lock().open("a") as probe, pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken while it lives
    finally:
        holder.kill()
        holder.wait()
    started = time.monotonic()
    with training_slot():
        assert time.monotonic() - started < 1.0  # no wait: the kernel freed it
