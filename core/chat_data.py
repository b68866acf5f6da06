"""One chat example in OpenAI's fine-tuning format: make, check, count, price, read, write.

A (plain text -> Markdown) pair becomes a system / user / assistant conversation. The checks
and counts follow OpenAI's cookbook notebook "Data preparation and analysis for chat model
fine-tuning": the same format-error categories, the same (approximate) token count — 3 tokens
per message, 1 per ``name``, 3 to prime the reply — the same distributions, the
default-epochs rule and the billing-token sum, all with the constants from
:class:`config.settings.ExportSettings`; plus a cost estimate from that settings' dated price
table. The export task (``tasks/export.py``), the trainers and the server all read and check
chat data here.

>>> export = ExportSettings()
>>> ex = to_chat("Hello, world.", "**Hello**, world.", export.system_message)
>>> [m["role"] for m in ex["messages"]]
['system', 'user', 'assistant']
>>> format_errors(ex)
[]
>>> format_errors({"messages": [{"role": "bot", "content": "hi"}]})
['unrecognized_role', 'example_missing_assistant_message']
>>> num_tokens_from_messages([{"role": "user", "content": "hello world"}])  # 3 + 1 + 2 + 3
9
>>> stats = dataset_stats([ex] * 10, export)
>>> stats["epochs"]  # 10 examples x 3 epochs < 100 examples, so 100 // 10 epochs
10
>>> stats["charged_tokens"] == 10 * stats["billing_tokens"]
True
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NotRequired

from typing_extensions import TypedDict

from config.settings import ExportSettings
from core.io import write_atomic
from core.tokens import count_tokens

SPLITS = ("train", "valid", "test")
REQUIRED_KEYS = ("split", "plain", "markdown", "article_id", "chunk")
ALLOWED_MESSAGE_KEYS = ("role", "content", "name", "function_call", "weight")  # the cookbook's
ROLES = ("system", "user", "assistant", "function")  # the cookbook's
DISTRIBUTIONS = (
    "num_messages_per_example",
    "num_total_tokens_per_example",
    "num_assistant_tokens_per_example",
)
MIN_FINE_TUNE_EXAMPLES = 10  # OpenAI rejects a training file with fewer examples
# json.dumps(ensure_ascii=False) leaves these raw; str.splitlines() would break a line at them
_LINE_BREAKERS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


# --- the records: plain dicts at run time (JSON lines, Prefect results), named in signatures


class Message(TypedDict):
    """One chat message (``name``: the cookbook counts one token for it)."""

    role: str  # one of ROLES
    content: str
    name: NotRequired[str]


class ChatExample(TypedDict):
    """One line of a fine-tuning JSONL file."""

    messages: list[Message]


class EvalExample(TypedDict):
    """A chat example as the evaluation scores it: its first three messages' contents."""

    system: str
    plain: str  # the user's message: what the model formats
    reference: str  # the assistant's: the author's Markdown


class Distribution(TypedDict):
    """min, max, mean, median, p5, p95 of some counts (all None when there are none)."""

    min: int | None
    max: int | None
    mean: float | None
    median: float | None
    p5: float | None
    p95: float | None


class DatasetStats(TypedDict):
    """The cookbook's figures for one split (:func:`dataset_stats`)."""

    n_examples: int
    missing_system: int
    missing_user: int
    distributions: dict[str, Distribution]  # by the names in DISTRIBUTIONS
    n_too_long: int
    epochs: int
    billing_tokens: int
    charged_tokens: int
    est_cost_usd: float
    price_model: str
    prices_as_of: str  # ISO date


class DatasetError(ValueError):
    """Invalid fine-tuning data: names the file, the 1-based line, the reason and error counts."""

    def __init__(
        self,
        file: str,
        line: int | None,
        reason: str,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        self.file, self.line, self.reason = file, line, reason
        self.counts = dict(counts or {})
        where = f"{file} line {line}" if line is not None else file
        tally = ", ".join(f"{k}: {v}" for k, v in self.counts.items())
        super().__init__(f"{where}: {reason}" + (f" (format errors: {tally})" if tally else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by constructor arguments (Prefect pickles exceptions into task states)."""
        return (type(self), (self.file, self.line, self.reason, self.counts))


# --- format checks --------------------------------------------------------------------------


def to_chat(plain: str, markdown: str, system_message: str) -> ChatExample:
    """One fine-tuning example: system prompt, the plain text as user, the Markdown as assistant."""
    return {
        "messages": [
            {"role": "system", "content": system_message},
            {"role": "user", "content": plain},
            {"role": "assistant", "content": markdown},
        ]
    }


_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
}


def _json_type(value: object) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_TYPES.get(type(value), f"a {type(value).__name__}")


def _message_problems(i: int, message: object) -> list[tuple[str, str]]:
    """The cookbook's four per-message checks, as (category, reason) for message ``i``."""
    found: list[tuple[str, str]] = []
    m: dict = message if isinstance(message, dict) else {}
    if not isinstance(message, dict):
        found.append(("message_missing_key", f"is {_json_type(message)}, not an object"))
    elif missing := [k for k in ("role", "content") if k not in m]:
        found.append(("message_missing_key", f"has no {' or '.join(map(repr, missing))}"))
    if unknown := [k for k in m if k not in ALLOWED_MESSAGE_KEYS]:
        found.append(
            ("message_unrecognized_key", f"has unrecognized key {', '.join(map(repr, unknown))}")
        )
    if (role := m.get("role")) not in ROLES:
        found.append(("unrecognized_role", f"has unrecognized role {role!r}"))
    content, function_call = m.get("content"), m.get("function_call")
    if (not content and not function_call) or not isinstance(content, str):
        what = "empty" if isinstance(content, str) else f"{_json_type(content)}, not a string"
        found.append(("missing_content", f"content is {what}"))
    return [(category, f"message {i} {reason}") for category, reason in found]


def _problems(example: object) -> list[tuple[str, str]]:
    """(category, reason) for each cookbook format error in ``example``, in cookbook order."""
    if not isinstance(example, dict):
        return [("data_type", f"example is {_json_type(example)}, not an object")]
    messages = example.get("messages")
    if not messages:
        reason = "'messages' is empty" if "messages" in example else "no 'messages' list"
        return [("missing_messages_list", reason)]
    if not isinstance(messages, list):
        return [("missing_messages_list", f"'messages' is {_json_type(messages)}, not a list")]
    found = [p for i, m in enumerate(messages, start=1) for p in _message_problems(i, m)]
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        found.append(("example_missing_assistant_message", "no assistant message"))
    return found


def format_errors(example: object) -> list[str]:
    """The cookbook error categories ``example`` violates, once per offending message."""
    return [category for category, _ in _problems(example)]


def validate_examples(
    examples: Sequence[object], name: str, line_numbers: Sequence[int] | None = None
) -> None:
    """Raise DatasetError at the first bad example (line = index + 1 unless ``line_numbers``)."""
    counts: Counter[str] = Counter()
    first: tuple[int, str] | None = None
    for index, example in enumerate(examples):
        problems = _problems(example)
        counts.update(category for category, _ in problems)
        if problems and first is None:
            line = line_numbers[index] if line_numbers is not None else index + 1
            first = (line, problems[0][1])
    if first is not None:
        raise DatasetError(name, first[0], first[1], counts)


# --- token counts and statistics ------------------------------------------------------------


def num_tokens_from_messages(
    messages: list[Message], tokens_per_message: int = 3, tokens_per_name: int = 1
) -> int:
    """The cookbook's (approximate) prompt size: per message 3 + its string values; 3 to reply."""
    num_tokens = 0
    for message in messages:
        num_tokens += tokens_per_message
        for key, value in message.items():
            if isinstance(value, str):  # the cookbook encodes every value; only text has tokens
                num_tokens += count_tokens(value)
            if key == "name":
                num_tokens += tokens_per_name
    return num_tokens + 3


def num_assistant_tokens_from_messages(messages: list[Message]) -> int:
    """Tokens in the assistant messages' content (what the model is trained to produce)."""
    return sum(
        count_tokens(m["content"])
        for m in messages
        if m.get("role") == "assistant" and isinstance(m.get("content"), str)
    )


def _quantile(ordered: list[int], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def distribution(values: Sequence[int]) -> Distribution:
    """min, max, mean, median, p5, p95 of ``values`` (all None when empty)."""
    if not values:
        return Distribution(min=None, max=None, mean=None, median=None, p5=None, p95=None)
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "median": float(statistics.median(ordered)),
        "p5": _quantile(ordered, 0.05),
        "p95": _quantile(ordered, 0.95),
    }


def default_epochs(n_train: int, cfg: ExportSettings) -> int:
    """OpenAI's default n_epochs for ``n_train`` examples (0 for an empty dataset)."""
    if n_train <= 0:
        return 0
    if n_train * cfg.target_epochs < cfg.min_target_examples:
        return min(cfg.max_default_epochs, cfg.min_target_examples // n_train)
    if n_train * cfg.target_epochs > cfg.max_target_examples:
        return max(cfg.min_default_epochs, cfg.max_target_examples // n_train)
    return cfg.target_epochs


def training_price(cfg: ExportSettings) -> float:
    """USD per 1M training tokens for the settings' ``price_model``."""
    if cfg.price_model not in cfg.prices:
        known = ", ".join(sorted(cfg.prices))
        raise ValueError(f"price_model {cfg.price_model!r} is not in the price table ({known})")
    return cfg.prices[cfg.price_model].training


def stats_of(examples: list[ChatExample], cfg: ExportSettings) -> DatasetStats:
    """dataset_stats for examples already validated."""
    n_messages, convo_lens, assistant_lens = [], [], []
    missing_system = missing_user = 0
    for example in examples:
        messages = example["messages"]
        roles = {m.get("role") for m in messages}
        missing_system += "system" not in roles
        missing_user += "user" not in roles
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_lens.append(num_assistant_tokens_from_messages(messages))
    limit = cfg.max_tokens_per_example
    epochs = default_epochs(len(examples), cfg)
    billing_tokens = sum(min(limit, length) for length in convo_lens)
    charged_tokens = epochs * billing_tokens
    return {
        "n_examples": len(examples),
        "missing_system": missing_system,
        "missing_user": missing_user,
        "distributions": {
            name: distribution(values)
            for name, values in zip(
                DISTRIBUTIONS, (n_messages, convo_lens, assistant_lens), strict=True
            )
        },
        "n_too_long": sum(length > limit for length in convo_lens),
        "epochs": epochs,
        "billing_tokens": billing_tokens,
        "charged_tokens": charged_tokens,
        "est_cost_usd": charged_tokens * training_price(cfg) / 1e6,
        "price_model": cfg.price_model,
        "prices_as_of": cfg.prices_as_of.isoformat(),
    }


def dataset_stats(
    examples: list[ChatExample], cfg: ExportSettings, name: str = "dataset"
) -> DatasetStats:
    """The cookbook's warnings, distributions, epochs and billing tokens, plus the cost (USD)."""
    validate_examples(examples, name)
    return stats_of(examples, cfg)


# --- files ----------------------------------------------------------------------------------


def dumps_jsonl(examples: Sequence[object]) -> str:
    """One JSON value per line, UTF-8 text unescaped (but no raw Unicode line separators)."""
    lines = []
    for example in examples:
        line = json.dumps(example, ensure_ascii=False)
        for raw, escaped in _LINE_BREAKERS.items():  # only ever inside JSON strings
            line = line.replace(raw, escaped)
        lines.append(line + "\n")
    return "".join(lines)


def read_numbered(path: str | Path, name: str | None = None) -> list[tuple[int, object]]:
    """(1-based line number, value) for each non-empty line of a JSONL file."""
    name = name or Path(path).name
    rows = []
    for number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DatasetError(name, number, f"not UTF-8 ({e.reason})") from e
        if not text.strip():
            continue
        try:
            rows.append((number, json.loads(text)))
        except json.JSONDecodeError as e:
            raise DatasetError(name, number, f"not valid JSON ({e.msg}, column {e.colno})") from e
    return rows


def read_jsonl(path: str | Path) -> list:
    """The JSON value on each non-empty line; DatasetError names the first line that is not JSON."""
    return [value for _, value in read_numbered(path)]


def read_chats(path: str | Path, name: str | None = None) -> list[list[Message]]:
    """The messages of each example of an OpenAI chat JSONL file, checked as the export checks
    them (:func:`validate_examples`) and ending with the assistant's answer: else DatasetError
    naming the file and line. The one reader of chat files (trainer, evaluation, server).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "train.jsonl"
    >>> write_jsonl(path, [to_chat("Title", "# Title", "sys")])
    >>> [m["role"] for m in read_chats(path)[0]]
    ['system', 'user', 'assistant']
    >>> _ = path.write_text(path.read_text() + '{"messages": [{"role": "user", "content": "x"}]}')
    >>> try:
    ...     read_chats(path)
    ... except DatasetError as error:
    ...     print(error)
    train.jsonl line 2: no assistant message (format errors: example_missing_assistant_message: 1)
    """
    name = name or Path(path).name
    rows = read_numbered(path, name)
    validate_examples([value for _, value in rows], name, [number for number, _ in rows])
    for number, value in rows:
        if value["messages"][-1].get("role") != "assistant":
            raise DatasetError(name, number, "the last message is not the assistant's")
    return [value["messages"] for _, value in rows]


def text_pairs(path: str | Path) -> Iterator[tuple[str, str]]:
    """(text to format, the author's Markdown) of each example of a split: its last user
    message and its answer. Lazy: the file is read only if the pairs are used."""
    for messages in read_chats(path):
        users = [m["content"] for m in messages[:-1] if m["role"] == "user"]
        if users:
            yield users[-1], messages[-1]["content"]


def chat_examples(path: str | Path) -> list[EvalExample]:
    """Each example of a chat JSONL file as ``{"system", "plain", "reference"}``: its first
    three messages (the shape the export writes and the evaluation scores)."""
    examples = []
    for messages in read_chats(path):
        system, user, assistant = messages[:3]
        examples.append(
            {
                "system": system["content"],
                "plain": user["content"],
                "reference": assistant["content"],
            }
        )
    return examples


def write_jsonl(path: str | Path, examples: Sequence[object]) -> None:
    """Write one JSON object per line, atomically, UTF-8 with ``ensure_ascii=False``."""
    write_atomic(path, dumps_jsonl(examples))
