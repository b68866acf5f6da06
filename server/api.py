"""OpenAI's API conventions the server keeps: object ids, timestamps and error objects."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    pass


OWNER = "personal"  # the "organization" in fine-tuned model ids and owned_by
API_KEY_ENV = "PGPT_SERVER_API_KEY"
ACTIVE = ("validating_files", "queued", "running")


def now() -> int:
    """Unix time in seconds (OpenAI's timestamps)."""
    return int(time.time())


def new_id(prefix: str, nbytes: int = 12) -> str:
    """``<prefix>-<hex>``: an object id (``file-``, ``ftjob-``, ``ftevent-``, ``ftckpt-``)."""
    return f"{prefix}-{secrets.token_hex(nbytes)}"


# --- errors ---------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered as OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type_,
        )

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code=None
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    """An APIError as a response (4xx: the SDK must not retry it)."""
    headers = {"x-should-retry": "false"} if error.status < 500 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def model_not_found(model: str) -> APIError:
    """OpenAI's 404 for an unknown model."""
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


_TYPE_NAMES = {"string": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}


def validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's validation error as OpenAI's 400, naming the first offending field."""
    errors = exc.errors()
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if any(e.get("type") == "json_invalid" for e in errors):
        return APIError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)",
        )
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(loc) or None
    kind = str(first.get("type", ""))
    if kind == "missing":
        return APIError(
            400, f"Missing required parameter: '{param}'.", param=param, code="missing_required"
        )
    if kind == "extra_forbidden":
        return APIError(
            400,
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    expected = next((name for key, name in _TYPE_NAMES.items() if kind.startswith(key)), None)
    if expected and ("_type" in kind or "_parsing" in kind):
        return APIError(
            400,
            f"Invalid type for '{param}': expected {expected}.",
            param=param,
            code="invalid_type",
        )
    return APIError(
        400, f"Invalid value for '{param}': {first.get('msg')}.", param=param, code="invalid_value"
    )
