"""The audit API served inside the worker process, beside the Temporal worker and the runner."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import uvicorn

from api.app import create_app
from runtime import StartupError

if TYPE_CHECKING:
    import asyncpg

    from settings import Settings


class ApiUnavailable(StartupError):
    """The audit API could not start; the message is one line for the operator."""


class _Server(uvicorn.Server):
    # The worker owns SIGINT/SIGTERM; uvicorn must not take them over.
    @contextlib.contextmanager
    def capture_signals(self):
        yield


def start_api_server(pool: asyncpg.Pool, settings: Settings) -> asyncio.Task:
    """Serve the API on API_HOST:API_PORT as a task; cancelling it finishes requests in flight."""
    server = _Server(uvicorn.Config(
        create_app(pool, settings.mentoring_api_tokens), host=settings.api_host,
        port=settings.api_port, log_level="warning", lifespan="on",
    ))

    async def serve_until_stopped() -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot listen: make it an ordinary error
            raise ApiUnavailable(
                f"the audit API cannot listen on {settings.api_host}:{settings.api_port} "
                "(API_HOST / API_PORT): is the port taken?") from None

    async def serve_api() -> None:
        serving = asyncio.ensure_future(serve_until_stopped())
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            server.should_exit = True  # finish requests in flight, then stop
            await serving
            raise

    return asyncio.create_task(serve_api(), name="audit-api")
