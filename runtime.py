"""Connecting to the configured services: telemetry, PostgreSQL, Temporal.

Shared by the worker, the CLI, the demo and the end-to-end tests, so each connects the same way
and a wrong setting always gives the same one-line error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio.client import Client, TLSConfig
from temporalio.contrib.opentelemetry import TracingInterceptor

from codec.encryption import encrypting_data_converter
from codec.keys import DataKeys, KeySetupError, ReadOnlyDataKeys, kek_from_settings
from events.migrations import MigrationError, migrate
from events.store import create_pool
from settings import Settings

STARTING_SERVER_GRACE_S = 30.0
"""How long a Temporal server that answers "not healthy yet" is given to finish starting."""


class StartupError(Exception):
    """A service cannot be reached or used; the message is one line for the operator."""


def setup_telemetry(settings: Settings) -> TracerProvider:
    """The process's tracer provider, exporting as the OTEL_* settings say.

    Set up even when nothing is exported: every event records the trace id of the work that
    appended it, which links an event to the workflow task and activity behind it.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    trace.set_tracer_provider(provider)
    if settings.otel_traces_exporter == "none":
        return provider
    exporter: SpanExporter
    if settings.otel_traces_exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def describe_database(url: str) -> str:
    """host:port/db without credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


async def open_database(url: str, *, max_size: int = 10, apply_migrations: bool = True) -> asyncpg.Pool:
    """A pool on a reachable, migrated database, or a StartupError saying what is wrong."""
    where = describe_database(url)
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (TimeoutError, OSError) as exc:
        raise StartupError(f"cannot reach PostgreSQL at {where} (DATABASE_URL): {exc}") from None
    except asyncpg.PostgresError as exc:
        raise StartupError(f"PostgreSQL at {where} refused the connection: {exc}") from None
    except ValueError as exc:
        raise StartupError(f"DATABASE_URL is not a valid PostgreSQL URL: {exc}") from None
    try:
        if apply_migrations:
            await migrate(conn)
    except MigrationError as exc:
        raise StartupError(f"the database at {where} cannot be migrated: {exc}") from None
    finally:
        await conn.close()
    return await create_pool(url, min_size=1, max_size=max_size)


def configured_database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded server of `make run`, where `worker.py --dev` put it."""
    if settings.database_url:
        return settings.database_url
    from devstack.postgres import database_url

    return database_url(settings.state_dir / "postgres", settings.embedded_postgres_port)


@asynccontextmanager
async def temporal_client(settings: Settings, *, address: str | None = None) -> AsyncIterator[Client]:
    """A client for a command outside the worker, with a small pool of its own for the codec's
    keys (closed on the way out)."""
    pool = await open_database(configured_database_url(settings), max_size=2, apply_migrations=False)
    try:
        yield await connect_temporal(settings, data_keys(settings, pool), address=address)
    finally:
        await pool.close()


def data_keys(settings: Settings, pool: asyncpg.Pool, *, read_only: bool = False) -> DataKeys:
    """The payload codec's keys: wrapped in `pool`'s database, by the configured KEK
    (`read_only`: for replays, which must create none)."""
    try:
        kek = kek_from_settings(settings.mentoring_kek, settings.mentoring_kek_file, settings.state_dir)
    except KeySetupError as exc:
        raise StartupError(str(exc)) from None
    kind = ReadOnlyDataKeys if read_only else DataKeys
    return kind(pool, kek, cache_seconds=settings.data_key_cache_seconds)


async def connect_temporal(settings: Settings, keys: DataKeys, *, address: str | None = None) -> Client:
    """A client whose payloads are encrypted with `keys` (codec/encryption.py)."""
    target = address or settings.temporal_address
    tls: bool | TLSConfig = False
    if settings.temporal_tls or settings.temporal_tls_cert:
        tls = TLSConfig(
            client_cert=_read_tls_file(settings.temporal_tls_cert, "TEMPORAL_TLS_CERT"),
            client_private_key=_read_tls_file(settings.temporal_tls_key, "TEMPORAL_TLS_KEY"),
            server_root_ca_cert=_read_tls_file(settings.temporal_tls_ca, "TEMPORAL_TLS_CA"),
        )
    deadline = asyncio.get_running_loop().time() + STARTING_SERVER_GRACE_S
    while True:
        try:
            return await Client.connect(
                target,
                namespace=settings.temporal_namespace,
                api_key=settings.temporal_api_key,
                tls=tls,
                data_converter=encrypting_data_converter(keys),
                interceptors=[TracingInterceptor()],
            )
        except Exception as exc:  # the SDK raises several types for one cause: unreachable or refused
            # A server that listens but is still starting ("Frontend is not healthy yet"): wait
            # for it, as `make run` connects right after the dev server opened its port.
            if "not healthy" in str(exc) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.5)
                continue
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StartupError(
                f"cannot connect to Temporal at {target}, namespace {settings.temporal_namespace} "
                f"(TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE): {reason}"
            ) from None


def _read_tls_file(path: Path | None, setting: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StartupError(f"cannot read {setting} at {path}: {exc.strerror or exc}") from None
