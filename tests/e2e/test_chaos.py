"""Chaos, small: 12 pairs through their whole lifecycle while two workers are SIGKILLed about
ten times; no pair may get stuck and nothing may be recorded twice (see chaos/__init__.py).

The full run is `python -m chaos --pairs 30 --kills 30`; this one takes three to four minutes
on a 2-core machine, most of it pairs waiting out the stalls the kills cause (an activity of a
killed worker moves to another after its 5 s heartbeat timeout).
"""

from __future__ import annotations

from pathlib import Path

from chaos.config import ChaosConfig
from chaos.run import run_chaos
from devstack.temporal import TemporalDevServer


async def test_no_pair_gets_stuck_when_workers_are_killed(
        temporal_dev_server: TemporalDevServer, database_url: str, tmp_path: Path):
    report = await run_chaos(ChaosConfig.ci(), temporal_address=temporal_dev_server.address,
                             database_url=database_url, work_dir=tmp_path,
                             say=lambda line: print(f"[chaos] {line}", flush=True))
    print(report.json_line())
    print(report.table())
    assert report.ok, f"{report.summary()}\n(worker logs in {tmp_path / 'logs'})"
