"""A full verify as a resumable background job: the same answer as verify(), a range of streams at a
time, resumed where a dead process left it, and started and followed through the API."""

from __future__ import annotations

import asyncio

import httpx

from api.app import create_app
from events import verify_jobs
from events.store import PostgresEventStore
from tests.test_tamper_evidence import _position, _tamper, _three_streams


async def test_a_job_checks_every_stream_a_range_at_a_time(store: PostgresEventStore):
    await _three_streams(store)
    job_id = await verify_jobs.start_job(store.pool, "hr-test")
    assert await verify_jobs.run_job(store.pool, job_id, streams_per_range=1)
    job = await verify_jobs.read_job(store.pool, job_id)
    assert job is not None and job.ok is True
    assert (job.streams_checked, job.events_checked) == (3, 12)


async def test_a_job_names_the_same_first_bad_event_as_verify(store: PostgresEventStore):
    await _three_streams(store)
    target = await _position(store, "pair-c", 3)
    await _tamper(store, f"UPDATE events SET payload = '{{}}'::jsonb WHERE position = {target}",
                  "DELETE FROM events WHERE stream_id = 'pair-a' AND version = 4")
    expected = (await store.verify()).first_bad
    job_id = await verify_jobs.start_job(store.pool, None)
    await verify_jobs.run_job(store.pool, job_id, streams_per_range=1)
    job = await verify_jobs.read_job(store.pool, job_id)
    assert job is not None and job.ok is False and expected is not None
    assert (job.first_bad["stream_id"], job.first_bad["position"]) == (expected.stream_id, expected.position)


async def test_a_job_left_half_done_is_resumed_where_it_stopped(store: PostgresEventStore):
    await _three_streams(store)
    job_id = await verify_jobs.start_job(store.pool, None)
    assert await verify_jobs._one_range(store.pool, job_id, 1)  # one range, then the process "dies"
    half = await verify_jobs.read_job(store.pool, job_id)
    assert half is not None and half.status == "running" and half.streams_checked == 1
    await verify_jobs.resume_unfinished(store.pool)
    job = await verify_jobs.read_job(store.pool, job_id)
    assert job is not None and job.ok is True and (job.streams_checked, job.events_checked) == (3, 12)


async def test_the_api_starts_a_job_and_shows_it_to_its_end(store: PostgresEventStore):
    await _three_streams(store)
    app = create_app(store.pool, {"auditor-token": "auditor"})
    auditor = {"Authorization": "Bearer auditor-token"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://audit") as client:
        started = await client.post("/audit/verify-jobs", headers=auditor)
        assert started.status_code == 202, started.text
        job_id = started.json()["id"]
        assert started.json()["requested_by"].startswith("auditor-")
        for _ in range(100):
            job = (await client.get(f"/audit/verify-jobs/{job_id}", headers=auditor)).json()
            if job["status"] == "done":
                break
            await asyncio.sleep(0.05)
        assert job["ok"] is True and job["events_checked"] == 12
        assert (await client.get("/audit/verify-jobs/999999", headers=auditor)).status_code == 404
        assert (await client.post("/audit/verify-jobs")).status_code == 401
