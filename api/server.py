"""The audit API served inside the worker process, beside the Temporal worker and the runner."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING
from urllib.parse import quote

import uvicorn

from api.app import create_app
from runtime import StartupError

if TYPE_CHECKING:
    import asyncpg

    from codec.keys import DataKeys
    from settings import Settings


class ApiUnavailable(StartupError):
    """The audit API could not start; the message is one line for the operator."""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    # The worker owns SIGINT/SIGTERM; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self):
        yield

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)  # exits (SystemExit) when it cannot bind or start up
        self.listening.set()


async def start_api_server(pool: asyncpg.Pool, settings: Settings, keys: DataKeys,
                           *, timeout_s: float = 60) -> asyncio.Task:
    """Serve the API, and the codec server at /codec, on API_HOST:API_PORT as a task;
    cancelling it finishes requests in flight. Returns once the port accepts connections, so
    that whoever prints its address next is not ahead of it; raises ApiUnavailable if it
    cannot listen."""
    from codec.server import create_codec_app

    codec = create_codec_app(keys, namespace=settings.temporal_namespace,
                             tokens=settings.mentoring_api_tokens, ui_origins=ui_origins(settings),
                             without_token=settings.codec_without_token)
    server = _Server(uvicorn.Config(
        # The API's own pool (from the URL) when it has one: an audit query never makes the
        # worker's activities wait for a connection.
        create_app(settings.database_url or pool, settings.mentoring_api_tokens, codec,
                   temporal_ui=temporal_ui_namespace(settings)), host=settings.api_host,
        port=settings.api_port, log_level="warning", lifespan="on",
    ))

    async def serve_until_stopped() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot listen or start: an ordinary error
            raise ApiUnavailable(
                f"the audit API cannot start on {settings.api_host}:{settings.api_port} "
                "(API_HOST / API_PORT): is the port taken? (or see the error above)") from None

    async def serve_api() -> None:
        serving = asyncio.ensure_future(serve_until_stopped())
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            server.should_exit = True  # finish requests in flight, then stop
            await serving
            raise

    task = asyncio.create_task(serve_api(), name="audit-api")
    listening = asyncio.create_task(server.listening.wait())
    try:
        await asyncio.wait([task, listening], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises why it stopped
            raise ApiUnavailable("the audit API stopped as it started")
        if not server.listening.is_set():
            raise ApiUnavailable(f"the audit API did not start listening within {timeout_s:g} s")
    except BaseException:  # refused, timed out, or the caller cancelled: no server left behind
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    finally:
        listening.cancel()
    return task


def temporal_ui_namespace(settings: Settings) -> str:
    """The Web UI's page of our namespace: TEMPORAL_UI_URL, else the local UI."""
    base = settings.temporal_ui_url.rstrip("/") or \
        f"http://{settings.temporal_address.rpartition(':')[0]}:{settings.temporal_ui_port}"
    return f"{base}/namespaces/{quote(settings.temporal_namespace, safe='')}"


def ui_origins(settings: Settings) -> list[str]:
    """The Web UI's origins the codec server answers (CORS): CODEC_UI_ORIGINS, else the local UI."""
    if settings.codec_ui_origins:
        return settings.codec_ui_origins
    host = settings.temporal_address.rpartition(":")[0]
    return sorted({f"http://{name}:{settings.temporal_ui_port}" for name in (host, "localhost", "127.0.0.1")})
