"""LoRA fine-tuning of a local chat model on the CPU: a hand-written, resumable training loop.

``train(run_dir, train_jsonl, valid_jsonl, base_dir, settings)`` loads the base model
(``backends.local.model.load_model``), wraps it with a PEFT LoRA adapter and trains it on the
chat examples: length-grouped batches (little padding), gradient accumulation, AdamW, linear
warm-up then cosine decay to 0, grad-norm clipping at 1.0, and a loss that is the mean over the
target tokens of each optimizer step (so accumulation equals one big batch).

Two CPU speed-ups over a stock PEFT step, each measured on SmolLM2-135M at batch 4 x 300
(fp32, 2 cores): logits only at the target positions (the vocabulary projection of the
system/user/padding positions would be thrown away by the loss; ~1.2x), and ``FastDropout`` in
the LoRA layers (``nn.Dropout`` draws one random number per element, which costs a sixth of the
step; ~1.15x). Together ~155 -> ~215 non-padding tokens/s, before length grouping's saving.

What a run leaves in ``run_dir``:

- ``checkpoint/`` every ``checkpoint_every`` steps (replaced atomically): adapter, optimizer,
  scheduler, RNG states, position and metrics. Starting ``train`` again on the same run dir
  resumes there and ends with the same adapter as an uninterrupted run (batch order is a pure
  function of (seed, epoch)).
- ``metrics.csv``: one row per optimizer step (valid_loss only where it was measured).
- ``adapter/``: the final PEFT adapter (``save_pretrained``); ``model.json``: the run's record.
  ``model.json`` marks the run done: ``train`` then returns it without training.

From a shell (what a subprocess-based worker runs; one JSON event per stdout line)::

    $ python -m backends.local.train runs/r1     # reads runs/r1/job.json:
    # {"train": "train.jsonl", "valid": "valid.jsonl", "base_dir": "models/base/x", "settings": {}}
    {"type": "start", "step": 0, "total_steps": 30, ...}
    {"type": "step", "step": 1, "total_steps": 30, "loss": 2.31, "tokens_per_s": 181.0, ...}

The schedule: warm-up over ``ceil(warmup_ratio * total)`` steps, then a cosine to 0
(``backends.local.plan``). The step itself is in ``backends.local.steps``, checkpoints in
``backends.local.checkpoint``; this module runs them: prepare, resume, epochs, finish.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backends.local.calibrate import DECODING_JSON
from backends.local.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    replace_dir,
    save_checkpoint,
    temp_dir,
)
from backends.local.data import (
    collate,
    split_by_tokens,
)
from backends.local.plan import (
    Event,
    OnEvent,
    epoch_steps,
    load_split,
    plan_steps,
    release_memory,
    tune_allocator,
)
from backends.local.scaffold import Reader, Scaffold, fit_scaffold
from backends.local.steps import (
    build_model,
    evaluate,
    make_optimizer,
    make_scheduler,
    pad_id,
    train_step,
)
from config.settings import FinetuneSettings
from core.chat_data import text_pairs
from core.io import write_atomic
from core.runs import ADAPTER, CHECKPOINT, RunFolder, file_sha256
from core.sample import spread

# --- the run --------------------------------------------------------------------------------


RESUME_INDEPENDENT = (
    "threads",
    "device",
    "checkpoint_every",
    "micro_batch_tokens",
    "mmap_threshold_kb",
    "openai",
    "max_valid_examples",
    "check_valid_examples",
)  # a resumed run may change these: speed, checkpoint spacing, how a step's batch is cut and
# memory is handed back (the same examples and loss), and the device it runs on; openai configures
# another backend; how much of the valid split is scored (a report, not training)


ADDED_LATER = {"decision_weight": 1.0, "scaffold": "none"}  # settings hashed only away from
# these defaults, so that a job trained before they existed keeps its name (an unchanged
# dataset never retrains)


def hashed_settings(settings: FinetuneSettings) -> dict[str, Any]:
    """The settings a run's fingerprint hashes, as JSON (see the two lists above)."""
    return {
        k: v
        for k, v in settings.model_dump(mode="json").items()
        if k not in RESUME_INDEPENDENT and (k not in ADDED_LATER or ADDED_LATER[k] != v)
    }


def run_fingerprint(dataset_sha256: str, base_dir: str | Path, settings: FinetuneSettings) -> str:
    """Hash of what a checkpoint's progress depends on: data, base model and settings."""
    blob = json.dumps(
        {
            "data": dataset_sha256,
            "base": str(Path(base_dir).resolve()),
            "settings": hashed_settings(settings),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _fresh_state(fingerprint: str) -> dict[str, Any]:
    """Progress of a run that has not trained yet."""
    return {
        "fingerprint": fingerprint,
        "step": 0,
        "epoch": 0,  # epoch in progress (0-based)
        "position": 0,  # optimizer steps already done in that epoch
        "tokens_seen": 0,  # non-padding tokens of every micro-batch trained on
        "train_time_s": 0.0,  # time inside optimizer steps
        "elapsed_s": 0.0,  # wall time of the run so far, over every (resumed) process
        "epoch_loss_sum": 0.0,  # target-token-weighted loss of the epoch in progress
        "epoch_targets": 0,
        "last_epoch_train_loss": None,  # token-weighted train loss of the last whole epoch
        "valid_loss": None,  # the latest validation loss
        "metrics": [],
        "resumes": 0,
    }


@dataclass
class Run:
    """Everything one training process works with (model, data, optimizer, progress)."""

    run_dir: Path
    train_jsonl: Path
    valid_jsonl: Path | None
    base_dir: Path
    settings: FinetuneSettings
    dataset_sha256: str
    model: Any
    tokenizer: Any
    scaffold: Scaffold | Reader  # what the model reads, fitted (backends.local.scaffold)
    pad: int
    train_set: list[dict[str, Any]]
    valid_set: list[dict[str, Any]]
    truncated: int  # examples cut to max_seq_tokens (train + valid)
    dropped: int  # examples left without a target token by the cut (train + valid)
    steps_per_epoch: int
    total_steps: int
    optimizer: Any
    scheduler: Any
    state: dict[str, Any]
    emit: OnEvent
    started: float = field(default_factory=time.perf_counter)  # this process's start
    elapsed_before: float = 0.0  # wall time of earlier (killed) processes of this run
    step_times: list[float] = field(default_factory=list)  # this process's optimizer steps

    def elapsed(self) -> float:
        """Wall time of the run so far, over every process that worked on it."""
        return self.elapsed_before + time.perf_counter() - self.started


def train(
    run_dir: str | Path,
    train_jsonl: str | Path,
    valid_jsonl: str | Path | None,
    base_dir: str | Path,
    settings: FinetuneSettings,
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter of ``base_dir`` on ``train_jsonl``; return ``model.json``'s dict.

    Resumes from ``run_dir/checkpoint`` if there is one; returns the existing ``model.json``
    without training if the run is already done.
    """
    run_dir = Path(run_dir)
    emit = on_event or (lambda event: None)
    if RunFolder(run_dir).is_done():
        record = RunFolder(run_dir).read_model()
        emit({"type": "end", "already_done": True, **_end_summary(record)})
        return record
    run = prepare_run(run_dir, train_jsonl, valid_jsonl, base_dir, settings, emit)
    resume(run)
    while run.state["step"] < run.total_steps:
        run_epoch(run)
    record = finish(run)
    del run  # the model, optimizer and data: garbage now; what follows (evaluation) gets it
    release_memory()
    return record


def prepare_run(
    run_dir: Path,
    train_jsonl: str | Path,
    valid_jsonl: str | Path | None,
    base_dir: str | Path,
    settings: FinetuneSettings,
    emit: OnEvent,
) -> Run:
    """Load the model and the data, plan the steps, make optimizer and scheduler."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp"):  # temp dirs of a killed process
        shutil.rmtree(stale, ignore_errors=True)
    tune_allocator(settings.mmap_threshold_kb)  # before the model and the first activations
    dataset_sha256 = file_sha256(train_jsonl, valid_jsonl)
    model, tokenizer = build_model(base_dir, settings)
    scaffold = fit_scaffold(settings.scaffold, text_pairs(train_jsonl))  # read only for "author"
    train_set, truncated, dropped = load_split(
        train_jsonl, tokenizer, settings.max_seq_tokens, settings.decision_weight, scaffold
    )
    valid_set, v_truncated, v_dropped = load_split(
        valid_jsonl, tokenizer, settings.max_seq_tokens, scaffold=scaffold
    )
    valid_set = spread(valid_set, settings.max_valid_examples)
    if not train_set:
        raise ValueError(f"{train_jsonl}: no training example with a target token")
    n_batches = math.ceil(len(train_set) / settings.batch_size)
    per_epoch, total = plan_steps(
        n_batches, settings.grad_accum, settings.epochs, settings.max_steps
    )
    optimizer = make_optimizer(model, settings)
    return Run(
        run_dir=run_dir,
        train_jsonl=Path(train_jsonl),
        valid_jsonl=None if valid_jsonl is None else Path(valid_jsonl),
        base_dir=Path(base_dir),
        settings=settings,
        dataset_sha256=dataset_sha256,
        model=model,
        tokenizer=tokenizer,
        scaffold=scaffold,
        pad=pad_id(tokenizer),
        train_set=train_set,
        valid_set=valid_set,
        truncated=truncated + v_truncated,
        dropped=dropped + v_dropped,
        steps_per_epoch=per_epoch,
        total_steps=total,
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, total, settings.warmup_ratio),
        state=_fresh_state(run_fingerprint(dataset_sha256, base_dir, settings)),
        emit=emit,
        started=started,
    )


def resume(run: Run) -> None:
    """Continue from the run dir's checkpoint if there is one; (re)write metrics.csv; "start"."""
    checkpoint = find_checkpoint(run.run_dir)
    if checkpoint is not None:
        saved = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        if saved.get("fingerprint") != run.state["fingerprint"]:
            raise ValueError(
                f"{checkpoint} was made with other data, base model or settings than this "
                "run's; delete it to start over, or use another run dir"
            )
        run.state = load_checkpoint(checkpoint, run.model, run.optimizer, run.scheduler)
        run.state["resumes"] += 1
        run.elapsed_before = run.state["elapsed_s"]
    RunFolder(run.run_dir).write_metrics(run.state["metrics"])
    run.emit(
        {
            "type": "start",
            "step": run.state["step"],
            "total_steps": run.total_steps,
            "steps_per_epoch": run.steps_per_epoch,
            "resumed": checkpoint is not None,
            "n_train": len(run.train_set),
            "n_valid": len(run.valid_set),
            "truncated": run.truncated,
            "dropped": run.dropped,
            **placement(run.model),
        }
    )


def placement(model: Any) -> dict[str, str]:
    """Where ``model`` runs and in which dtype: ``{"device": "cpu", "dtype": "float32"}``."""
    return {"device": str(model.device), "dtype": str(model.dtype).removeprefix("torch.")}


def run_epoch(run: Run) -> None:
    """Train the rest of the epoch in progress (or up to the last step of the run)."""
    s, state = run.settings, run.state
    lengths = [len(e["input_ids"]) for e in run.train_set]
    steps = epoch_steps(lengths, s.batch_size, s.grad_accum, s.seed, state["epoch"])
    for position in range(state["position"], len(steps)):
        tick = time.perf_counter()
        micro = [
            collate([run.train_set[i] for i in rows], run.pad)
            for batch in steps[position]
            for rows in split_by_tokens(batch, lengths, s.micro_batch_tokens)
        ]
        result = train_step(run.model, run.optimizer, run.scheduler, micro)
        seconds = time.perf_counter() - tick
        after_step(run, result, seconds, epoch_end=position + 1 == len(steps))
        if state["step"] >= run.total_steps:
            return


def after_step(run: Run, result: dict[str, float], seconds: float, epoch_end: bool) -> None:
    """Book a finished step: progress, step event, validation, metrics row, checkpoint."""
    state, done = run.state, run.state["step"] + 1 >= run.total_steps
    run.step_times.append(seconds)
    state["step"] += 1
    state["position"] += 1
    epoch = round(state["epoch"] + state["position"] / run.steps_per_epoch, 4)  # done, fractional
    state["tokens_seen"] += result["tokens"]
    state["train_time_s"] += seconds
    state["epoch_loss_sum"] += result["loss"] * result["n_target"]
    state["epoch_targets"] += result["n_target"]
    tokens_per_s = result["tokens"] / seconds
    mean_step = sum(run.step_times) / len(run.step_times)
    run.emit(
        {
            "type": "step",
            "step": state["step"],
            "total_steps": run.total_steps,
            "epoch": epoch,
            "loss": result["loss"],
            "tokens_per_s": tokens_per_s,
            "eta_s": (run.total_steps - state["step"]) * mean_step,
            "lr": result["lr"],
            "grad_norm": result["grad_norm"],
        }
    )
    valid_loss = None
    if run.valid_set and (epoch_end or done):
        valid_loss = evaluate(run.model, run.valid_set, run.settings.batch_size, run.pad)
        state["valid_loss"] = valid_loss
        run.emit(
            {
                "type": "valid",
                "step": state["step"],
                "epoch": epoch,
                "valid_loss": valid_loss,
                "n_examples": len(run.valid_set),
            }
        )
    if epoch_end:
        state["last_epoch_train_loss"] = state["epoch_loss_sum"] / state["epoch_targets"]
        state.update(epoch=state["epoch"] + 1, position=0, epoch_loss_sum=0.0, epoch_targets=0)
    state["elapsed_s"] = run.elapsed()
    row = {
        "step": state["step"],
        "epoch": epoch,
        "train_loss": round(result["loss"], 6),
        "valid_loss": None if valid_loss is None else round(valid_loss, 6),
        "tokens_per_s": round(tokens_per_s, 1),
        "lr": float(f"{result['lr']:.6g}"),
        "elapsed_s": round(state["elapsed_s"], 2),
    }
    state["metrics"].append(row)
    RunFolder(run.run_dir).append_metrics(row)
    every = run.settings.checkpoint_every  # 0: never
    if not done and every > 0 and state["step"] % every == 0:
        path = save_checkpoint(run.run_dir, run.model, run.optimizer, run.scheduler, state)
        run.emit({"type": "checkpoint", "step": state["step"], "path": str(path)})


def finish(run: Run) -> dict[str, Any]:
    """Save the adapter, write ``model.json`` (the run is then done), drop the checkpoint."""
    state, run_dir = run.state, run.run_dir
    adapter_tmp = temp_dir(run_dir, ADAPTER)
    run.model.save_pretrained(adapter_tmp)
    decoding = calibrate_decoding(run)
    write_atomic(adapter_tmp / DECODING_JSON, json.dumps(decoding, indent=2) + "\n")
    if hasattr(run.scaffold, "save"):  # the author's rules, counted from the train split
        run.scaffold.save(adapter_tmp)
    replace_dir(adapter_tmp, run_dir / ADAPTER)
    final_train = (
        state["epoch_loss_sum"] / state["epoch_targets"]
        if state["epoch_targets"]
        else state["last_epoch_train_loss"]
    )
    record = {
        "base_dir": str(run.base_dir.resolve()),
        "adapter_dir": str((run_dir / ADAPTER).resolve()),
        "train_jsonl": str(run.train_jsonl.resolve()),
        "valid_jsonl": None if run.valid_jsonl is None else str(run.valid_jsonl.resolve()),
        "dataset_sha256": run.dataset_sha256,
        "hyperparameters": run.settings.model_dump(mode="json"),  # model.json: JSON on disk
        "n_train_examples": len(run.train_set),
        "n_valid_examples": len(run.valid_set),
        "truncated_examples": run.truncated,
        "dropped_examples": run.dropped,
        "steps": state["step"],
        "total_steps": run.total_steps,
        "epochs_done": round(state["epoch"] + state["position"] / run.steps_per_epoch, 4),
        "tokens_seen": state["tokens_seen"],
        "train_time_s": round(state["train_time_s"], 2),
        "tokens_per_s": round(state["tokens_seen"] / max(state["train_time_s"], 1e-9), 1),
        "wall_time_s": round(run.elapsed(), 2),
        "resumes": state["resumes"],
        "final_train_loss": final_train,
        "final_valid_loss": state["valid_loss"],
        "decoding": decoding,
        **placement(run.model),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RunFolder(run_dir).write_model(record)
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    run.emit({"type": "end", "already_done": False, **_end_summary(record)})
    return record


def calibrate_decoding(run: Run) -> dict[str, Any]:
    """The faithful decoder's biases, chosen on the valid split (``calibrate``)."""
    from backends.local.calibrate import calibrate

    run.model.eval()
    s = run.settings

    def progress(done: int, total: int, what: str) -> None:
        message = f"checking the decoding biases, {what}: {done}/{total} valid chunks decoded"
        run.emit({"type": "status", "level": "info", "message": message})

    found = calibrate(
        run.model, run.tokenizer, run.valid_jsonl, run.scaffold, s.max_valid_examples,
        s.check_valid_examples, progress,
    )  # fmt: skip
    run.emit({"type": "calibrated", **found})
    return found


def _end_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``model.json`` an ``end`` event carries."""
    keys = ("steps", "tokens_seen", "tokens_per_s", "wall_time_s", "final_train_loss")
    return {**{k: record.get(k) for k in keys}, "final_valid_loss": record.get("final_valid_loss")}


def train_job(run_dir: str | Path, on_event: OnEvent | None = None) -> dict[str, Any]:
    """Train the job that ``run_dir/job.json`` describes; ``model.json``'s dict (``train``).

    job.json holds the settings as JSON (a file other processes write: the backend, the
    server); they become ``FinetuneSettings`` here, once (missing keys take their defaults).
    """
    from backends.local.model import job_base_dir

    job = RunFolder(run_dir).read_job()
    settings = FinetuneSettings.model_validate(job.settings)
    base_dir = job_base_dir(job, Path(run_dir).parent.parent)  # DATA/models/<id> -> DATA
    return train(run_dir, job.train, job.valid, base_dir, settings, on_event=on_event)


def main(argv: list[str] | None = None) -> int:
    """``python -m backends.local.train RUN_DIR``: run ``RUN_DIR/job.json``, events on stdout."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m backends.local.train RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    events = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not interleave with the JSON event lines

    def emit(event: Event) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    try:
        train_job(run_dir, on_event=emit)
    finally:
        sys.stdout = events
    return 0


if __name__ == "__main__":
    sys.exit(main())
