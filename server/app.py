"""The FastAPI app: the routes over the state, files, models, chat and jobs; running it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import BackgroundTasks, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backends.local import LocalBackend
from server.api import (
    API_KEY_ENV,
    OWNER,
    APIError,
    error_body,
    error_response,
    new_id,
    now,
    validation_error,
)
from server.chat import (
    ChatRequest,
    Decoding,
    Engine,
    Prepared,
    conversation_of,
    decoding_of,
    sse_event,
    unsupported_in,
    usage_of,
)
from server.files import Files
from server.jobs import JobRequest, Worker, job_not_found, resolve_hyperparameters
from server.middleware import BearerAuth, BodyLimit
from server.models import Models
from server.store import Store, UnknownCursor
from server.ui import add_playground_routes

if TYPE_CHECKING:
    from config.settings import FinetuneSettings, Settings


log = logging.getLogger(__name__)

ORGANIZATION_ID = "org-personal"
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
SUFFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # no ":" (it separates a model id's parts)


# --- the app --------------------------------------------------------------------------------


@dataclass
class ServerState:
    """Everything one app works with."""

    settings: Settings
    store: Store
    files: Files
    models: Models
    engine: Engine
    worker: Worker
    closed: bool = False

    def close(self) -> None:
        """Stop the worker and close the store (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.worker.stop()
        self.store.close()


def _list(data: list[dict[str, Any]], has_more: bool | None = None) -> dict[str, Any]:
    """OpenAI's list object (``has_more`` for cursor pages)."""
    body: dict[str, Any] = {"object": "list", "data": data}
    if has_more is not None:
        body.update(
            has_more=has_more,
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
        )
    return body


def _page(store: Store, table: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A cursor page as a list object; 400 for an ``after`` that is not in the list."""
    try:
        items, more = store.page(table, *args, **kwargs)
    except UnknownCursor as e:
        raise APIError(400, f"No such object for 'after': {e.args[0]}", param="after") from None
    return _list(items, more)


def create_app(settings: Settings, api_key: str | None = None) -> FastAPI:
    """The OpenAI-compatible app over ``settings.data_dir`` (``api_key``: the bearer it needs)."""
    data_dir = Path(settings.data_dir)
    store = Store(data_dir / "server" / "state.sqlite3")
    files = Files(store, data_dir / "server" / "files")
    models = Models(settings, store)
    engine = Engine(LocalBackend(data_dir, settings.finetune), settings.serve.max_tokens)
    state = ServerState(
        settings, store, files, models, engine, Worker(store, files, models, settings)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state.worker.start()
        except Exception as e:
            app.state.startup_error = str(e)
            raise
        try:
            yield
        finally:
            await asyncio.to_thread(state.close)

    app = FastAPI(
        title="personal-gpt",
        docs_url=None,
        redoc_url=None,
        openapi_url="/v1/openapi.json",  # behind the bearer check like the rest of /v1
        lifespan=lifespan,
    )
    app.state.pgpt = state
    app.add_middleware(BodyLimit, max_bytes=settings.serve.max_body_bytes)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)  # added last: runs first
    _add_error_handlers(app)
    _add_model_routes(app, state)
    _add_chat_routes(app, state)
    _add_file_routes(app, state)
    _add_job_routes(app, state, settings.finetune)
    add_playground_routes(app, settings.export.system_message)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI's error object; bad input is never a 500."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})"
        else:
            message = str(exc.detail)
        return error_response(APIError(exc.status_code, message, code=None))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(f"The server had an error processing your request: {exc}", "server_error"),
            status_code=500,
        )


def _add_model_routes(app: FastAPI, state: ServerState) -> None:
    """``/v1/models``."""

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return _list(state.models.list())

    @app.get("/v1/models/{model_id}")
    def retrieve_model(model_id: str) -> dict[str, Any]:
        return state.models.get(model_id)


def _add_chat_routes(app: FastAPI, state: ServerState) -> None:
    """``/v1/chat/completions``."""

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        refused = unsupported_in(body)
        if refused is not None:
            raise refused
        key = await asyncio.to_thread(state.models.resolve, body.model)
        conversation = conversation_of(body.messages)
        decoding = decoding_of(body, conversation)
        prepared = await asyncio.to_thread(state.engine.prepare, key, conversation)
        completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", now()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _stream(
                state.engine, prepared, decoding, body.model, completion_id, created, include_usage
            )
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        done = await asyncio.to_thread(state.engine.complete, prepared, decoding)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": body.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": done.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": done.finish_reason,
                    }
                ],
                "usage": usage_of(done),
                "system_fingerprint": None,
            }
        )


async def _stream(
    engine: Engine,
    prepared: Prepared,
    decoding: Decoding,
    model: str,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The chat completion as ``chat.completion.chunk`` events, token by token, then [DONE]."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    abort = threading.Event()

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return sse_event(body)

    def on_delta(text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, text)

    task = asyncio.ensure_future(
        asyncio.to_thread(engine.complete, prepared, decoding, on_delta, abort)
    )
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        while (text := await queue.get()) is not None:
            yield chunk({"content": text})
        try:
            done = task.result()
        except Exception as e:
            log.exception("streaming chat completion %s", completion_id)
            yield sse_event(
                error_body(f"The server had an error while generating: {e}", "server_error")
            )
            return
        yield chunk({}, done.finish_reason)
        if include_usage:
            yield sse_event(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage_of(done),
                }
            )
        yield sse_event("[DONE]")
    finally:
        abort.set()  # a client that went away stops the generation at its next token


def _add_file_routes(app: FastAPI, state: ServerState) -> None:
    """``/v1/files``."""

    @app.post("/v1/files")
    def upload(
        file: UploadFile = File(...),  # noqa: B008 (FastAPI's idiom)
        purpose: str = Form(...),
    ) -> dict[str, Any]:
        if purpose not in FILE_PURPOSES:
            raise APIError(
                400,
                f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'",
                param="purpose",
                code="invalid_value",
            )
        filename = Path(file.filename or "upload").name or "upload"
        return state.files.add(file.file, filename, purpose)

    @app.get("/v1/files")
    def list_files(
        after: str | None = None,
        limit: int = Query(10_000, ge=1, le=10_000),
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> dict[str, Any]:
        where, args = ("purpose = ?", (purpose,)) if purpose else ("1", ())
        return _page(state.store, "files", where, args, after, limit, order == "desc")

    @app.get("/v1/files/{file_id}")
    def retrieve_file(file_id: str) -> dict[str, Any]:
        return state.files.get(file_id)

    @app.get("/v1/files/{file_id}/content")
    def file_content(file_id: str) -> FileResponse:
        found = state.files.get(file_id)
        if not state.files.path(file_id).is_file():
            raise APIError(
                404, f"The bytes of {file_id} are gone.", param="id", code="file_not_found"
            )
        return FileResponse(
            state.files.path(file_id),
            media_type="application/octet-stream",
            filename=found["filename"],
        )

    @app.delete("/v1/files/{file_id}")
    def delete_file(file_id: str) -> dict[str, Any]:
        return state.files.delete(file_id)


def _add_job_routes(app: FastAPI, state: ServerState, finetune: FinetuneSettings) -> None:
    """``/v1/fine_tuning/jobs``."""
    store, worker = state.store, state.worker

    def get_job(job_id: str) -> dict[str, Any]:
        job = store.get("jobs", job_id)
        if job is None:
            raise job_not_found(job_id)
        return job

    @app.post("/v1/fine_tuning/jobs")
    def create_job(body: JobRequest, background: BackgroundTasks) -> dict[str, Any]:
        job, internal = _new_job(state, body, finetune)
        store.put_job(job, internal)
        store.add_event(job["id"], f"Created fine-tuning job: {job['id']}")
        store.add_event(job["id"], f"Validating training file: {job['training_file']}")
        background.add_task(worker.validate, job["id"])
        return job

    @app.get("/v1/fine_tuning/jobs")
    def list_jobs(
        request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=10_000)
    ) -> dict[str, Any]:
        where, args = "1", ()
        for key, value in request.query_params.multi_items():
            if key == "metadata" and value == "null":
                where += " AND json_extract(body, '$.metadata') IS NULL"
            elif key.startswith("metadata[") and key.endswith("]"):
                name = key[len("metadata[") : -1].replace('"', '\\"')
                where += " AND json_extract(body, ?) = ?"
                args = (*args, f'$.metadata."{name}"', value)
        return _page(store, "jobs", where, args, after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}")
    def retrieve_job(job_id: str) -> dict[str, Any]:
        return get_job(job_id)

    @app.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> dict[str, Any]:
        return worker.cancel(job_id)

    @app.get("/v1/fine_tuning/jobs/{job_id}/events")
    def list_events(
        job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=10_000)
    ) -> dict[str, Any]:
        get_job(job_id)
        return _page(store, "events", "job_id = ?", (job_id,), after, limit)

    @app.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(
        job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=10_000)
    ) -> dict[str, Any]:
        get_job(job_id)
        return _page(store, "checkpoints", "job_id = ?", (job_id,), after, limit)


def _new_job(
    state: ServerState, body: JobRequest, finetune: FinetuneSettings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job object and its internal record for a create request (4xx if it cannot be run)."""
    models = state.models
    if body.model != models.base_id:
        models.resolve(body.model)  # 404 model_not_found if it is no model at all
        raise APIError(
            400,
            f"Model {body.model} is not available for fine-tuning on this server: only the "
            f"base model {models.base_id} is.",
            param="model",
            code="model_not_available",
        )
    for param, file_id in (
        ("training_file", body.training_file),
        ("validation_file", body.validation_file),
    ):
        if file_id is None:
            continue
        found = state.store.get("files", file_id)
        if found is None:
            raise APIError(400, f"invalid {param}: {file_id}", param=param, code="file_not_found")
        if found["purpose"] != "fine-tune":
            raise APIError(
                400,
                f"File {file_id} has purpose '{found['purpose']}', not 'fine-tune'.",
                param=param,
                code="invalid_file_purpose",
            )
    if body.suffix is not None and not SUFFIX.fullmatch(body.suffix):
        raise APIError(
            400, "'suffix' must be 1-64 letters, digits, '.', '_' or '-'.", param="suffix"
        )
    if body.integrations:
        raise APIError(400, "Integrations are not supported by this server.", param="integrations")
    if body.metadata is not None and (
        len(body.metadata) > 16
        or any(len(k) > 64 or len(v) > 512 for k, v in body.metadata.items())
    ):
        raise APIError(
            400,
            "'metadata': at most 16 pairs, keys <= 64 and values <= 512 characters.",
            param="metadata",
        )
    hyper = resolve_hyperparameters(body, finetune)
    seed = finetune.seed if body.seed is None else body.seed
    job_id = new_id("ftjob")
    model_id = (
        f"ft:{models.base_id}:{OWNER}:{body.suffix or OWNER}:{job_id.removeprefix('ftjob-')[:8]}"
    )
    settings = {  # JSON: kept in the store, then written as the job's job.json
        **finetune.model_dump(mode="json"),
        "epochs": hyper["n_epochs"],
        "batch_size": hyper["batch_size"],
        "learning_rate": finetune.learning_rate * hyper["learning_rate_multiplier"],
        "seed": seed,
    }
    job = {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": now(),
        "model": models.base_id,
        "fine_tuned_model": None,
        "organization_id": ORGANIZATION_ID,
        "result_files": [],
        "status": "validating_files",
        "training_file": body.training_file,
        "validation_file": body.validation_file,
        "hyperparameters": hyper,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "trained_tokens": None,
        "error": None,
        "finished_at": None,
        "estimated_finish": None,
        "seed": seed,
        "metadata": body.metadata,
        "integrations": [],
        "user_provided_suffix": body.suffix,
    }
    return job, {"model_id": model_id, "settings": settings}


# --- running it -----------------------------------------------------------------------------


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread; yield its base URL ``http://host:port/v1``.

    On exit uvicorn shuts down (the app's lifespan stops its training worker; a running
    job is left to resume on the next start).
    """
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)

    def run() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits 3 when the startup fails
            server.run()

    thread = threading.Thread(target=run, name="pgpt-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=10)
            why = getattr(app.state, "startup_error", None) or "see the log"
            raise RuntimeError(f"the server did not start on {host}:{port}: {why}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        state = getattr(app.state, "pgpt", None)
        if state is not None:
            state.close()


def serve(
    settings: Settings, host: str | None = None, port: int | None = None, api_key: str | None = None
) -> None:
    """Serve until interrupted (``pgpt serve``); host and port default to ``settings.serve``."""
    import uvicorn

    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    app = create_app(settings, api_key=api_key)
    log.info(
        "personal-gpt serving on http://%s:%d/v1 (playground: http://%s:%d/)", *(host, port) * 2
    )
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def main(argv: list[str] | None = None) -> int:
    """``python -m server [--data-dir D] [--profile P] [--host H] [--port N]
    [--api-key K]`` (the key defaults to ``$PGPT_SERVER_API_KEY``)."""
    from config.settings import load_settings

    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve the local model behind OpenAI's API (chat, files, fine-tuning).",
    )
    parser.add_argument("--data-dir", help="data directory (default: PGPT_DATA_DIR or ./data)")
    parser.add_argument("--profile", help="settings profile name or .yaml path")
    parser.add_argument("--host", help="address to listen on (default: serve.host, loopback)")
    parser.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    parser.add_argument(
        "--api-key", help=f"require this bearer token (default: ${API_KEY_ENV}; none: open)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings(args.profile, args.data_dir)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    serve(settings, args.host, args.port, api_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
