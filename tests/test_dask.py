"""The Dask task runner: the same flows, their fan-out on a Dask cluster, give the same
results as on the default thread pool: ingest the same Parquet, evaluation the same answers."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from config.runtime import results_in
from config.settings import load_settings
from core.runs import set_current_model
from flows.evaluate import evaluate
from flows.ingest import ingest
from tasks.store import parquet_path

from conftest import SAMPLE, task_states

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
N_SAMPLE = len(list((SAMPLE / "posts").glob("*.html")))
COLUMNS_OF_THE_RUN = {"fetched_at"}  # when a page was read: differs between any two runs


def run_ingest(tmp_path, name: str, runner: str) -> tuple[dict, Counter, object]:
    """Ingest the sample into DATA=tmp_path/name with a profile whose runner section is
    ``runner`` (YAML); the summary, the task states and the Parquet table."""
    profile = tmp_path / f"{name}.yaml"
    profile.write_text(runner)
    data = tmp_path / name
    with results_in(data):
        state = ingest([str(SAMPLE / "posts")], str(profile), str(data), return_state=True)
    table = pq.read_table(parquet_path(data, "articles"))
    return state.result(), task_states(state), table


def without_run_columns(table):
    return table.drop_columns([c for c in table.column_names if c in COLUMNS_OF_THE_RUN])


def test_dask_local_cluster_gives_the_same_parquet_as_threads(tmp_path):
    threads, thread_states, expected = run_ingest(tmp_path, "threads", "runner: {}\n")
    dask, dask_states, table = run_ingest(
        tmp_path, "dask", "runner:\n  task_runner: dask\n  dask_workers: 2\n"
    )
    assert load_settings(str(tmp_path / "dask.yaml")).runner.task_runner == "dask"
    assert len(dask["added"]) == len(threads["added"]) == N_SAMPLE
    assert dask_states == thread_states
    assert dask_states[("clean_page", "Completed")] == N_SAMPLE
    assert table.num_rows == N_SAMPLE
    assert without_run_columns(table).equals(without_run_columns(expected))
    assert table.schema.equals(expected.schema)


def test_an_existing_cluster_runs_the_cleaning_on_its_workers(tmp_path):
    """``runner.dask_address``: the flow sends its fan-out to a cluster it did not start."""
    from distributed import Client, LocalCluster, get_task_stream

    _, _, expected = run_ingest(tmp_path, "threads", "runner: {}\n")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as stream,
    ):
        runner = f"runner:\n  task_runner: dask\n  dask_address: {cluster.scheduler_address}\n"
        summary, states, table = run_ingest(tmp_path, "remote", runner)
        workers = set(cluster.workers)
    assert len(summary["added"]) == N_SAMPLE
    assert states[("clean_page", "Completed")] == N_SAMPLE
    cleaned = [t for t in stream.data if t["key"].startswith("clean_page")]
    assert len(cleaned) == N_SAMPLE
    assert len({t["worker"] for t in cleaned}) == len(workers) == 2  # both workers cleaned
    assert without_run_columns(table).equals(without_run_columns(expected))


def test_the_evaluation_on_dask_gives_the_same_answers(tmp_path, retrained):
    """Generation fans out to Dask worker processes (each loads the model) and still gives
    exactly the answers the thread pool gave (greedy decoding)."""
    data, tiny_profile, first = retrained  # a retrain run on the default thread pool
    report = Path(first["evaluate"]["report_dir"])
    model_id = first["finetune"]["model_id"]
    copy = tmp_path / "dask"  # another data dir: no cached answers there
    for part in ("jsonl", "parquet", f"models/{model_id}"):
        shutil.copytree(data / part, copy / part)
    set_current_model(copy, model_id)  # the champion is the model itself, as after its run
    profile = tmp_path / "tiny-dask.yaml"
    profile.write_text(
        Path(tiny_profile).read_text() + "runner:\n  task_runner: dask\n  dask_workers: 2\n"
    )
    with results_in(copy):
        state = evaluate(str(profile), str(copy), model_id=model_id, return_state=True)
    again = state.result()
    states = task_states(state)
    assert states[("generate_answers", "Completed")] == 8  # 4 computed, base, finetuned (+ raw)
    assert states[("generate_answers", "Cached")] == 0
    assert (report / "answers.jsonl").read_text() == (
        Path(again["report_dir"]) / "answers.jsonl"
    ).read_text()
    assert again["models"]["finetuned"]["cer"] == first["evaluate"]["models"]["finetuned"]["cer"]
