"""The killer: SIGKILL one of the workers at a random moment, start it again at once, repeat."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chaos.stack import Worker


@dataclass(frozen=True)
class Kill:
    at_s: float  # seconds since the run started
    worker: str
    pid: int | None
    restart_s: float


@dataclass
class Killer:
    workers: Sequence[Worker]
    limit: int
    every: tuple[float, float]
    rng: random.Random
    say: Callable[[str], None] = print
    active_pairs: Callable[[], int] = lambda: 0
    kills: list[Kill] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, started: float) -> None:
        """Kill until `stop` is set (the drivers are done) or `limit` kills are done.

        The pause is counted from one kill to the next, restart included. One worker is down
        at a time: the victim is started again before the next kill, so the other one always
        has the task queue meanwhile.
        """
        next_kill = time.monotonic() + self.rng.uniform(*self.every)
        while len(self.kills) < self.limit and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(next_kill - time.monotonic(), 0))
            if stop.is_set():
                return
            victim = self.rng.choice(list(self.workers))
            pid, moment = victim.pid, time.monotonic() - started
            next_kill = time.monotonic() + self.rng.uniform(*self.every)
            victim.kill()
            restart = await asyncio.to_thread(victim.start)
            self.kills.append(Kill(round(moment, 2), victim.name, pid, round(restart, 2)))
            self.say(f"kill {len(self.kills)}/{self.limit} at {moment:.1f} s: worker {victim.name} "
                     f"(pid {pid}), back in {restart:.1f} s; {self.active_pairs()} pair(s) active")
