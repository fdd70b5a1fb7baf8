"""What worker.py calls: the projection runner and the audit API, started as tasks, stopped cleanly."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from devstack.postgres import free_port
from events.store import create_pool
from runtime import data_keys
from settings import Settings
from tests.projections import lifecycles as story
from worker import start_projections_and_api


async def test_worker_starts_runner_and_api_and_stops_them(database_url: str, store):
    settings = Settings(database_url=database_url, api_port=free_port(),
                        mentoring_api_tokens={"hr-token": "hr"})
    pool = await create_pool(database_url, max_size=4)
    tasks = await start_projections_and_api(pool, settings, data_keys(settings, pool))
    try:
        url = f"http://{settings.api_host}:{settings.api_port}"
        async with httpx.AsyncClient(base_url=url) as client:
            # Started means listening: worker.py prints the API's address right after this, and
            # whoever follows it must not be refused.
            sign_in = await client.get("/dashboard/sign-in")
            assert sign_in.status_code == 200
            await story.write(store, story.declined_by_mentor("p-w"))
            response = None
            for _ in range(300):
                response = await client.get("/audit/pairs/p-w",
                                            headers={"Authorization": "Bearer hr-token"})
                if response.status_code == 200 and \
                        response.json()["overview"]["stage"] == "declined":
                    break
                await asyncio.sleep(0.05)
            assert response is not None, "the API never answered"
            assert response.json()["overview"]["stage"] == "declined"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(pool.close(), 5)  # nothing left holding a pool connection


async def test_api_port_taken_is_a_one_line_error(database_url: str):
    import socket

    from api.server import ApiUnavailable

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(database_url=database_url, api_port=port,
                            mentoring_api_tokens={"hr-token": "hr"})
        pool = await create_pool(database_url, max_size=4)
        try:
            with pytest.raises(ApiUnavailable) as refused:
                await start_projections_and_api(pool, settings, data_keys(settings, pool))
            assert f"127.0.0.1:{port}" in str(refused.value)
            # ... and the runner started beside it was stopped, not left running.
            assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("projection")]
        finally:
            await asyncio.wait_for(pool.close(), 5)


async def test_a_start_cancelled_while_the_api_comes_up_leaves_no_server_behind(database_url: str):
    import socket

    settings = Settings(database_url=database_url, api_port=free_port(), mentoring_api_tokens={"hr-token": "hr"})
    pool = await create_pool(database_url, max_size=4)
    try:
        starting = asyncio.create_task(start_projections_and_api(pool, settings, data_keys(settings, pool)))
        await asyncio.sleep(0.01)  # under way: the server is being built or binding
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        await asyncio.sleep(1)  # a server left running would have bound its port by now
        assert not [t for t in asyncio.all_tasks() if t.get_name() in ("audit-api", "projection-runner")]
        with socket.socket() as probe:
            probe.bind((settings.api_host, settings.api_port))  # free again
    finally:
        await asyncio.wait_for(pool.close(), 5)
