"""Peak resident memory of ``make run``'s training and of ``pgpt format``, from the OS.

Run from the project root (a benchmark, not a test; it trains for minutes)::

    .venv/bin/python bench/memory.py                     # the full quick-profile training
    .venv/bin/python bench/memory.py --steps 4           # a short run (capped optimizer steps)
    .venv/bin/python bench/memory.py --timeline rss.tsv  # also RSS each second, with the step

(a) **Training**: a fresh temp data dir gets the bundled sample (``pgpt ingest``) and its
``quick``-profile export (``pgpt export --profile quick``), as ``make run`` makes them. A
child process then does what ``pgpt run``'s fine-tune task does in its own process:
``LocalBackend.start_finetune`` (which converts the packaged GGUF to the base model folder
the first time) and ``LocalBackend.follow`` (the training loop, ``backends.local.train``),
with the quick profile's settings (``--steps`` caps ``max_steps``, ``--threads`` sets
``finetune.threads``; by default neither is changed).

(b) **Format**: ``pgpt format`` (the CLI, end to end: model load, adapter merge, faithful
decoding, repair) of a ~400-token chunk of the sample (the longest test-split chunk's plain
text, cut at a line to ``--format-tokens`` cl100k tokens), with the model (a) trained.

Each runs in its own child process; its peak resident size is ``ru_maxrss`` of that child
from ``os.wait4`` (the kernel's high-water mark of the child, and of any process it waited
for: not torch's counters, not tracemalloc, which sees no tensor memory). Prints
``peak_rss_train_gb`` and ``peak_rss_format_gb`` (GB = 10^9 bytes), the wall time of each and
the load average (1 min) before and after each. The issue's goals: <= 3 GB and <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PGPT = [sys.executable, "-c", "import pgpt; pgpt.app()"]


# --- child: the training, with an RSS sampler ------------------------------------------------


def rss_kb(field: str = "VmRSS") -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child_train(data_dir: Path, steps: int | None, threads: int | None, timeline: str) -> None:
    """Convert the base model if needed and train the quick profile, as ``pgpt run`` does."""
    from backends.local import LocalBackend
    from config.settings import load_settings

    last = {"event": "start-up"}
    out = open(timeline, "w", encoding="utf-8") if timeline else None  # noqa: SIM115
    started = time.monotonic()

    def sample() -> None:
        while True:
            if out:
                out.write(
                    f"{time.monotonic() - started:.0f}\t{rss_kb() / 1e6:.3f}\t{last['event']}\n"
                )
                out.flush()
            time.sleep(1.0)

    threading.Thread(target=sample, daemon=True).start()
    settings = load_settings("quick", data_dir).finetune
    if steps is not None:
        settings = settings.model_copy(update={"max_steps": steps})
    if threads is not None:
        settings = settings.model_copy(update={"threads": threads})
    jsonl = data_dir / "jsonl"
    backend = LocalBackend(data_dir, settings)
    last["event"] = "convert"
    job_id = backend.start_finetune(str(jsonl / "train.jsonl"), str(jsonl / "valid.jsonl"))
    run = backend.run_folder(job_id)  # train from scratch, even in a reused data dir
    shutil.rmtree(run.checkpoint, ignore_errors=True)
    run.model_json.unlink(missing_ok=True)
    print(json.dumps({"type": "converted", "rss_gb": rss_kb() / 1e6}), flush=True)

    def on_event(event: dict[str, Any]) -> None:
        last["event"] = f"{event['type']} {event.get('step', '')}".strip()
        keep = ("type", "step", "total_steps", "loss", "valid_loss")
        row = {k: event[k] for k in keep if k in event}
        print(json.dumps({**row, "rss_gb": rss_kb() / 1e6}), flush=True)

    job = backend.follow(job_id, on_event=on_event)
    print(json.dumps({"type": "done", "model_id": job.model_id, "hwm_gb": rss_kb("VmHWM") / 1e6}))


# --- parent ----------------------------------------------------------------------------------


def measure(command: list[str], **kwargs: Any) -> tuple[int, float, float, str]:
    """Run ``command``; (peak RSS in bytes from wait4, seconds, load after, its stdout)."""
    tick = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, **kwargs)
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        print("   ", line.rstrip(), flush=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - tick
    if proc.returncode:
        raise SystemExit(f"{shlex.join(command)} failed with exit code {proc.returncode}")
    return usage.ru_maxrss * 1024, seconds, os.getloadavg()[0], "".join(lines)


def run(command: list[str], env: dict[str, str]) -> None:
    """Run a set-up command quietly (its output shown only if it fails)."""
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{shlex.join(command)} failed with exit code {done.returncode}")


def format_input(data_dir: Path, tokens: int) -> str:
    """About ``tokens`` cl100k tokens of the sample's plain text: the longest test chunk, cut."""
    from core.tokens import count_tokens

    chunks = []
    for split in ("test", "valid", "train"):
        path = data_dir / "jsonl" / f"{split}.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                user = [m for m in json.loads(line)["messages"] if m["role"] == "user"]
                chunks.append(user[-1]["content"])
    text = max(chunks, key=count_tokens)
    kept: list[str] = []
    for line in text.splitlines():
        if kept and count_tokens("\n".join([*kept, line])) > tokens:
            break
        kept.append(line)
    return "\n".join(kept)


def gb(n: int) -> str:
    return f"{n / 1e9:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="reuse this data dir (default: fresh temp)")
    parser.add_argument(
        "--steps", type=int, help="cap the training's optimizer steps (a short run)"
    )
    parser.add_argument("--threads", type=int, help="finetune.threads (default: the profile's)")
    parser.add_argument("--format-tokens", type=int, default=400, help="cl100k tokens to format")
    parser.add_argument("--timeline", default="", help="write the training's RSS each second here")
    parser.add_argument("--only", choices=("train", "format"), help="run one of the two")
    parser.add_argument("--child", choices=("train",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "train":
        child_train(args.data_dir, args.steps, args.threads, args.timeline)
        return 0

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="pgpt-bench-memory-"))
    env = {**os.environ, "PREFECT_HOME": str(data_dir / "prefect-home")}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    print(f"data dir: {data_dir}   load average: {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, tuple[int, float, float, float]] = {}
    if args.only != "format":
        if not (data_dir / "jsonl" / "train.jsonl").exists():
            print("ingest + export of the sample (quick profile) ...", flush=True)
            run(
                [*PGPT, "--data-dir", str(data_dir), "ingest", str(ROOT / "data/sample/posts")], env
            )
            run([*PGPT, "--data-dir", str(data_dir), "export", "--profile", "quick"], env)
        command = [sys.executable, __file__, "--child", "train", "--data-dir", str(data_dir)]
        for flag, value in (("--steps", args.steps), ("--threads", args.threads)):
            if value is not None:
                command += [flag, str(value)]
        if args.timeline:
            command += ["--timeline", args.timeline]
        print(f"(a) training: {shlex.join(command)}", flush=True)
        load_before = os.getloadavg()[0]
        peak, seconds, load_after, out = measure(command, env=env, cwd=ROOT)
        results["train"] = (peak, seconds, load_before, load_after)
        done = [json.loads(line) for line in out.splitlines() if '"done"' in line]
        model_id = done[-1]["model_id"]
        (data_dir / "models" / "bench-memory-model").write_text(model_id + "\n")
    if args.only != "train":
        model_file = data_dir / "models" / "bench-memory-model"
        if not model_file.exists():
            raise SystemExit(f"no model trained by this bench in {data_dir}: run (a) first")
        model_id = model_file.read_text().strip()
        text = format_input(data_dir, args.format_tokens)
        chunk = data_dir / "bench-memory-chunk.txt"
        chunk.write_text(text + "\n", encoding="utf-8")
        command = [*PGPT, "--data-dir", str(data_dir), "format", "--model", model_id, str(chunk)]
        print(f"(b) format: {shlex.join(command)}", flush=True)
        load_before = os.getloadavg()[0]
        peak, seconds, load_after, _ = measure(command, env=env, cwd=ROOT)
        results["format"] = (peak, seconds, load_before, load_after)

    print()
    for name, (peak, seconds, before, after) in results.items():
        print(f"peak_rss_{name}_gb: {gb(peak)}")
        print(
            f"  {name}: {seconds:.0f} s wall, load average {before:.2f} before, {after:.2f} after"
        )
    print(f"command: {shlex.join([sys.executable, 'bench/memory.py', *(argv or sys.argv[1:])])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
