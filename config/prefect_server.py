"""Which Prefect API a ``pgpt`` command's flows talk to.

Without ``PREFECT_API_URL``, Prefect starts a temporary server for each command: a uvicorn
subprocess that imports Prefect's whole server (about 5 s on a quiet 2-core machine, 10 s on
a busy one) after the command has imported it too, just to start it. When a Prefect server is
already listening on this machine's loopback at ``PREFECT_SERVER_API_PORT`` (4200, where
``make server`` and ``prefect server start`` put it), the command uses that one instead and
says so in one line; runs then also show in its UI. Otherwise nothing changes: Prefect's
temporary server, as before. ``PREFECT_API_URL``, when set, is always used as it is, and
``PGPT_REUSE_PREFECT_SERVER=0`` turns the reuse off.

>>> loopback_api(4200)
'http://127.0.0.1:4200/api'
>>> compatible("0.8.4", "0.8.4"), compatible("0.9.0", "0.8.4"), compatible("2.0.0", "0.8.4")
(True, True, False)
"""

from __future__ import annotations

import base64
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from prefect.settings import (
    PREFECT_API_AUTH_STRING,
    PREFECT_API_URL,
    PREFECT_SERVER_API_PORT,
    temporary_settings,
)

from config.runtime import running

REUSE_ENV = "PGPT_REUSE_PREFECT_SERVER"  # "0" (or "false", "no", "off"): never reuse
OWNER_ENV = "PGPT_OWNER_PID"  # the pgpt process a temporary server was started for
TEMPORARY_SERVER = "prefect.server.api.server:create_app"  # in its command line
PROBE_TIMEOUT_S = 0.5  # per request; loopback answers in milliseconds when a server is up


def loopback_api(port: int) -> str:
    """The API URL of a Prefect server on this machine's loopback at ``port``."""
    return f"http://127.0.0.1:{port}/api"


def compatible(server_api_version: str, client_api_version: str) -> bool:
    """Whether Prefect's client accepts the server: the same major API version."""
    return server_api_version.split(".")[0] == client_api_version.split(".")[0]


def _get(url: str, timeout: float) -> object:
    """The JSON body of a GET on ``url``, with no proxy (loopback only) and Prefect's auth."""
    request = urllib.request.Request(url)
    auth = PREFECT_API_AUTH_STRING.value()
    if auth:
        secret = auth.get_secret_value() if hasattr(auth, "get_secret_value") else auth
        token = base64.b64encode(str(secret).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def probe(api: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Prefect API at ``api`` cannot be used; ``None`` when it can.

    ``"not running"`` when nothing healthy answers ``/health``, or the reason (its API
    version is incompatible, it refuses us) when a server answers but cannot run our flows.
    """
    from prefect.client.constants import SERVER_API_VERSION

    try:
        if _get(f"{api}/health", timeout) is not True:
            return "not running"
    except (OSError, ValueError):  # refused, timed out, not HTTP, not JSON
        return "not running"
    try:
        version = _get(f"{api}/version", timeout)
    except urllib.error.HTTPError as exc:
        return f"its /version answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"its /version failed: {exc}"
    if not isinstance(version, str) or not compatible(version, SERVER_API_VERSION):
        return f"its API version {version!r} does not match ours ({SERVER_API_VERSION})"
    return None


def reuse_enabled() -> bool:
    return os.environ.get(REUSE_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def stop_orphans(proc: Path = Path("/proc")) -> list[int]:
    """Stop the temporary Prefect servers whose pgpt process is gone (killed before it could
    stop its server; Prefect's server is a subprocess that outlives its parent), and return
    their ids. Only servers started with :data:`OWNER_ENV` set are looked at (no one
    else's), and only on a system with ``/proc``.
    """
    stopped = []
    for entry in proc.glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        owner = next((v for v in environ if v.startswith(f"{OWNER_ENV}=".encode())), b"")
        if TEMPORARY_SERVER.encode() not in command or not owner:
            continue
        if not running(int(owner.split(b"=", 1)[1] or 0)):
            with suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGTERM)
                stopped.append(int(entry.name))
    return stopped


@contextmanager
def prefect_api(say: Callable[[str], None]) -> Iterator[str | None]:
    """Run the block's flows on a running Prefect server when there is one.

    Yields the API URL that was chosen, or ``None`` when the block keeps Prefect's own
    choice: ``PREFECT_API_URL`` when it is set, else Prefect's temporary server. ``say``
    gets one line when a running server is used (or found but unusable).
    """
    os.environ[OWNER_ENV] = str(os.getpid())  # a temporary server inherits it
    if stopped := stop_orphans():
        say(f"Prefect: stopped {len(stopped)} temporary server(s) left by killed pgpt runs")
    if PREFECT_API_URL.value() or not reuse_enabled():
        yield None
        return
    api = loopback_api(PREFECT_SERVER_API_PORT.value())
    why_not = probe(api)
    if why_not is None:
        say(f"Prefect: using the server running at {api} ({REUSE_ENV}=0 to not)")
        with temporary_settings({PREFECT_API_URL: api}):
            yield api
        return
    if why_not != "not running":
        say(f"Prefect: not using the server at {api}: {why_not}; starting a temporary one")
    yield None
