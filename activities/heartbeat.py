"""Every activity heartbeats while it runs, so a worker that dies mid-activity is noticed in
seconds instead of at the activity's start-to-close timeout.

Temporal cannot tell a dead worker from a slow one: without heartbeats it waits for the whole
start-to-close timeout before giving the work to another worker. The workflows ask for a short
heartbeat timeout on every activity; this interceptor beats for them in the background, whatever
the activity does (one SQL call, an SMTP exchange), and stops when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


class HeartbeatWhileRunning(Interceptor):
    """Register on the worker: `Worker(..., interceptors=[HeartbeatWhileRunning()])`."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BeatingActivity(next)


class _BeatingActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        timeout = activity.info().heartbeat_timeout
        if not timeout:
            return await self.next.execute_activity(input)
        # Three beats per timeout: one lost to a busy event loop does not fail the attempt.
        beating = asyncio.create_task(_beat(timeout.total_seconds() / 3))
        try:
            return await self.next.execute_activity(input)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating


async def _beat(every_s: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(every_s)
