"""``/v1/chat/completions``: requests, decoding options, streaming, and the engine running them."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backends.local import LocalBackend
from server.api import APIError

if TYPE_CHECKING:  # backends.local.generate imports torch: when a chat first generates
    from backends.local.generate import Usage
    from core.chat_data import Message


log = logging.getLogger(__name__)

MAX_LOADED = 2  # models kept in memory (LRU): SmolLM2 is ~0.6 GB in fp32, base + one fine-tune


# --- chat -----------------------------------------------------------------------------------


def first_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, or None."""
    found = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return min(found) if found else None


def safe_end(text: str, stops: list[str], cautious: bool) -> int:
    """How much of ``text`` (decoded so far) can be sent: what later tokens cannot change.

    Held back: trailing whitespace (the answer is stripped at the end), a half UTF-8
    character, the start of a possible stop string, and, for tokenizers that clean up spaces
    on decoding (``" 's"`` -> ``"'s"``), the text after the second-last space.
    """
    end = len(text.rstrip())
    while end and text[end - 1] == "\ufffd":
        end -= 1
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                end = min(end, len(text) - k)
                break
    if cautious:
        spaces = [i for i, char in enumerate(text[:end]) if char.isspace()]
        end = spaces[-2] if len(spaces) >= 2 else 0
    return max(end, 0)


class DeltaStreamer:
    """A transformers streamer: sends answer text as soon as it is final, stops at a stop string.

    ``generate`` calls ``put`` with the prompt, then with each new token, and ``end``.
    """

    def __init__(
        self, tokenizer: Any, stops: list[str], on_delta: Callable[[str], None] | None
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.on_delta = on_delta
        self.ids: list[int] = []
        self.sent = ""  # the answer text sent so far: always a prefix of the final answer
        self.stopped = False  # a stop string turned up: generation may end
        self.cautious = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self._prompt = True

    def text(self) -> str:
        """The answer decoded so far (leading whitespace dropped, as the final answer's)."""
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()

    def put(self, value: Any) -> None:
        """Take the next token(s) (the first call is the prompt, skipped)."""
        if self._prompt:
            self._prompt = False
            return
        if self.stopped:
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self.text()
        cut = first_stop(text.rstrip("\ufffd"), self.stops)  # not in a half character
        if cut is not None:
            self.stopped = True
            self.send(text[:cut])
        else:
            self.send(text[: safe_end(text, self.stops, self.cautious)])

    def end(self) -> None:
        """Generation is over (the final text is sent by the caller)."""

    def send(self, upto: str) -> None:
        """Send what ``upto`` (the answer so far) adds to what was sent."""
        if len(upto) > len(self.sent) and upto.startswith(self.sent):
            delta, self.sent = upto[len(self.sent) :], upto
            if self.on_delta is not None:
                self.on_delta(delta)
        elif not upto.startswith(self.sent):
            log.warning("streamed text is not a prefix of the answer: %r", self.sent[-40:])


@dataclass
class Prepared:
    """A chat request ready to generate: the model, the conversation and its token budget."""

    model: Any
    tokenizer: Any
    conversation: list[Message]
    prompt_tokens: int
    cap: int  # most new tokens: serve.max_tokens, and what the context has left


@dataclass
class Decoding:
    """How to decode (from the request)."""

    max_tokens: int | None = None  # None: the local backend's budget from the input
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    faithful: bool = False


@dataclass
class Completion:
    """One answer."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class Engine:
    """Loaded models (LRU, ``LocalBackend.load``) and the lock that serialises their use."""

    def __init__(self, backend: LocalBackend, max_tokens: int, keep: int = MAX_LOADED) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.keep = keep
        self.lock = threading.Lock()

    def prepare(self, key: str, conversation: list[Message]) -> Prepared:
        """Load the model, count the prompt's tokens; 400 if the context cannot hold it."""
        with self.lock:  # a fast tokenizer must not be used by two threads at once either
            model, tokenizer = self.backend.load(key, keep=self.keep)
            prompt = tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
            prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        context = getattr(model.config, "max_position_embeddings", None) or 1_000_000
        if prompt_tokens >= context:
            raise APIError(
                400,
                f"This model's maximum context length is {context} tokens. However, your "
                f"messages resulted in {prompt_tokens} tokens.",
                param="messages",
                code="context_length_exceeded",
            )
        cap = min(self.max_tokens, context - prompt_tokens)
        return Prepared(model, tokenizer, conversation, prompt_tokens, cap)

    def complete(
        self,
        job: Prepared,
        decoding: Decoding,
        on_delta: Callable[[str], None] | None = None,
        abort: threading.Event | None = None,
    ) -> Completion:
        """Generate one answer (sending its text through ``on_delta`` as it comes)."""
        from backends.local.generate import generate

        streamer = DeltaStreamer(job.tokenizer, decoding.stop, on_delta)
        details: list[Usage] = []
        with self.lock:
            [answer] = generate(
                job.model,
                job.tokenizer,
                [job.conversation],
                max_new_tokens=decoding.max_tokens,
                max_new_tokens_cap=job.cap,
                faithful=decoding.faithful,
                temperature=decoding.temperature,
                top_p=decoding.top_p,
                seed=decoding.seed,
                streamer=streamer,
                should_stop=lambda: streamer.stopped or (abort is not None and abort.is_set()),
                details=details,
            )
            raw = job.tokenizer.decode(streamer.ids, skip_special_tokens=True).lstrip()
        [info] = details
        cut = first_stop(raw, decoding.stop)
        if cut is not None:
            text, reason = raw[:cut], "stop"
        else:
            text, reason = answer, "stop" if info["finish_reason"] != "length" else "length"
        streamer.send(text)
        return Completion(text, reason, info["prompt_tokens"], info["completion_tokens"])


class ContentPart(BaseModel):
    """A part of a message's content: only text is understood."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """A chat message (extra keys such as ``tool_calls`` are ignored)."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    """``stream_options``."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: what this server does, ignores, or refuses (400)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)  # torch.manual_seed's range
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    faithful: bool | None = None  # personal-gpt's extension: constrained decoding
    # accepted and ignored: bookkeeping that does not change the answer
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[str] | None = None
    # accepted only at their neutral values (refused with a 400 otherwise)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: str | None = None
    verbosity: str | None = None


def unsupported_in(body: ChatRequest) -> APIError | None:
    """A 400 for a request this server cannot honour, or None."""
    if (body.n or 1) > 1:
        return APIError(400, "n > 1 is not supported by this server; send n = 1.", param="n")
    neutral = {
        "frequency_penalty": body.frequency_penalty in (None, 0),
        "presence_penalty": body.presence_penalty in (None, 0),
        "logprobs": not body.logprobs,
        "top_logprobs": body.top_logprobs in (None, 0),
        "logit_bias": not body.logit_bias,
        "tools": not body.tools,
        "tool_choice": body.tool_choice in (None, "none"),
        "functions": not body.functions,
        "function_call": body.function_call in (None, "none"),
        "response_format": (body.response_format or {"type": "text"}).get("type") == "text",
        "audio": body.audio is None,
        "prediction": body.prediction is None,
        "web_search_options": body.web_search_options is None,
        "modalities": body.modalities in (None, ["text"]),
        "reasoning_effort": body.reasoning_effort is None,
    }
    for param, ok in neutral.items():
        if not ok:
            return APIError(
                400, f"'{param}' is not supported by this server.", param=param, code="unsupported"
            )
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    if len(stops) > 4:
        return APIError(400, "'stop' takes at most 4 sequences.", param="stop")
    return None


def conversation_of(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The messages as the chat template takes them (developer -> system, text parts joined)."""
    out = []
    for i, message in enumerate(messages):
        if message.role in ("tool", "function"):
            raise APIError(
                400,
                f"messages[{i}]: role '{message.role}' is not supported by this server.",
                param=f"messages.[{i}].role",
            )
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise APIError(
                    400,
                    f"messages[{i}]: only text content parts are supported by this server.",
                    param=f"messages.[{i}].content",
                )
            content = "\n".join(part.text or "" for part in content)
        role = "system" if message.role == "developer" else message.role
        out.append({"role": role, "content": content or ""})
    return out


def decoding_of(body: ChatRequest, conversation: list[dict[str, str]]) -> Decoding:
    """The request's decoding settings (temperature 0 or top_p 0: greedy)."""
    temperature = body.temperature or 0.0
    top_p = 1.0 if body.top_p is None else body.top_p
    if top_p == 0:
        temperature = 0.0
    if body.faithful and conversation[-1]["role"] != "user":
        raise APIError(
            400,
            "'faithful' keeps the last user message's words: the last message must be the user's.",
            param="faithful",
        )
    return Decoding(
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=temperature,
        top_p=top_p if temperature > 0 else 1.0,
        seed=body.seed,
        stop=[body.stop] if isinstance(body.stop, str) else list(body.stop or []),
        faithful=bool(body.faithful),
    )


def usage_of(done: Completion) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def sse_event(data: dict[str, Any] | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
