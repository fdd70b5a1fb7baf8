"""The baseline of `make bench-scale`: a pair as bare Temporal would run it, with no event store, no
projection and no codec. The same shape of work as `MentoringPair`'s first stage: at start, an
activity registering the people, one recording the nomination and one writing the mentor's notice;
a durable timer for the reminder (its notice written when it fires); an update confirming the
mentor's motivation (recorded, then the senior's invitation written). Its activities do nothing
durable but write the notices' files, as the project's outbox does.

    python -m bench.bare ADDRESS TASK_QUEUE OUTBOX_DIR     # the baseline's worker process
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

QUICK = {"start_to_close_timeout": timedelta(seconds=30)}


@workflow.defn(name="BarePair")
class BarePair:
    def __init__(self) -> None:
        self.motivated = False

    @workflow.run
    async def run(self, pair: dict) -> str:
        await workflow.execute_activity("bare_register", pair["pair_id"], **QUICK)  # type: ignore[call-overload]
        await workflow.execute_activity("bare_record", pair["pair_id"], **QUICK)  # type: ignore[call-overload]
        await workflow.execute_activity("bare_notify", f"{pair['pair_id']}-request", **QUICK)  # type: ignore[call-overload]
        reminded = False
        while not self.motivated:
            wait = timedelta(seconds=pair["reminder_after_s"]) if not reminded else timedelta(days=7)
            try:
                await workflow.wait_condition(lambda: self.motivated, timeout=wait)
            except TimeoutError:
                if reminded:
                    return "expired"
                reminded = True
                await workflow.execute_activity("bare_notify", f"{pair['pair_id']}-reminder",  # type: ignore[call-overload]
                                                **QUICK)
        await workflow.wait_condition(lambda: False)  # stays alive, as a pair waiting for its senior
        return "done"

    @workflow.update
    async def confirm_motivation(self, request: dict) -> str:
        await workflow.execute_activity("bare_record", request["recorded_by"], **QUICK)  # type: ignore[call-overload]
        self.motivated = True
        await workflow.execute_activity("bare_notify", f"{request['pair_id']}-invitation", **QUICK)  # type: ignore[call-overload]
        return "mentee_invited"


def activities(outbox: Path) -> list:
    @activity.defn(name="bare_register")
    async def register(pair_id: str) -> None:
        return None

    @activity.defn(name="bare_record")
    async def record(what: str) -> None:
        return None

    @activity.defn(name="bare_notify")
    async def notify(name: str) -> None:
        (outbox / f"{name}.txt").write_text("a notice\n")

    return [register, record, notify]


async def serve(address: str, task_queue: str, outbox: Path) -> None:
    outbox.mkdir(parents=True, exist_ok=True)
    client = await Client.connect(address)
    # The same cache as the project's worker (WORKER_MAX_CACHED_WORKFLOWS, as bench-scale sets it).
    cache = int(os.environ.get("WORKER_MAX_CACHED_WORKFLOWS", "1000"))
    async with Worker(client, task_queue=task_queue, workflows=[BarePair], activities=activities(outbox),
                      max_cached_workflows=cache):
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(serve(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
    except KeyboardInterrupt:
        pass
