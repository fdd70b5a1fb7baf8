"""`python -m chaos`: the chaos run on servers of its own.

    python -m chaos --pairs 30 --kills 30 [--clients 12] [--kill-every 4-8]

Starts PostgreSQL and the Temporal dev server on free 127.0.0.1 ports, then the run (see
chaos/__init__.py). Prints one progress line per kill and per pair, then one JSON line with the
figures and a table. Exit code 0 when every check holds, 1 when one does not, 2 on bad usage.
The work folder (databases, worker logs, the outbox) is removed after a clean run and kept
after a failed one, or always with --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from chaos.config import ChaosConfig


def _seconds_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        values = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give MIN-MAX seconds, e.g. 4-8") from None
    if not 0 < values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 < MIN <= MAX")
    return values


def _parser() -> argparse.ArgumentParser:
    full, ci = ChaosConfig(), ChaosConfig.ci()
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # Defaults are None here: unset options come from the full or the --ci configuration.
    parser.add_argument("--pairs", type=int, help=f"pairs in all ({full.pairs}; --ci {ci.pairs})")
    parser.add_argument("--kills", type=int,
                        help=f"SIGKILLs at most, while pairs are active ({full.kills}; --ci {ci.kills})")
    parser.add_argument("--clients", type=int, help=f"concurrent client drivers ({full.clients})")
    parser.add_argument("--kill-every", type=_seconds_range, metavar="MIN-MAX",
                        help="seconds between kills, uniform (4-8; --ci 2-4)")
    parser.add_argument("--pair-deadline", type=float, metavar="SECONDS", dest="pair_deadline_s",
                        help=f"a pair not completed by then is stuck ({full.pair_deadline_s:g}; "
                             f"--ci {ci.pair_deadline_s:g})")
    parser.add_argument("--seed", type=int, help="random seed of the killer")
    parser.add_argument("--work-dir", type=Path,
                        help="where the servers, logs and outbox go (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder after a clean run")
    parser.add_argument("--ci", action="store_true", help="start from the pytest variant's sizes")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    given = {name: getattr(args, name) for name in
             ("pairs", "kills", "clients", "kill_every", "pair_deadline_s", "seed")
             if getattr(args, name) is not None}
    config = ChaosConfig.ci(**given) if args.ci else ChaosConfig(**given)
    if config.pairs < 1 or config.clients < 1 or config.kills < 0:
        parser.error("--pairs and --clients must be at least 1, --kills at least 0")
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"[chaos] work folder {work_dir}", flush=True)
    try:
        report = asyncio.run(_run(config, work_dir))
    except KeyboardInterrupt:
        print(f"[chaos] interrupted; work folder kept: {work_dir}", file=sys.stderr)
        return 130
    print(report.json_line(), flush=True)
    print(report.table(), flush=True)
    if not report.ok:
        print(report.summary(), file=sys.stderr, flush=True)
        print(f"[chaos] work folder kept: {work_dir}", file=sys.stderr, flush=True)
        return 1
    if not args.keep and args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


async def _run(config: ChaosConfig, work_dir: Path):
    from chaos.run import run_chaos
    from chaos.stack import own_servers

    def say(line: str) -> None:
        print(f"[chaos] {line}", flush=True)

    say("starting PostgreSQL and the Temporal dev server on free ports")
    with own_servers(work_dir) as (database_url, temporal_address):
        return await run_chaos(config, temporal_address=temporal_address,
                               database_url=database_url, work_dir=work_dir, say=say)


if __name__ == "__main__":
    sys.exit(main())
