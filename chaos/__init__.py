"""Chaos run: no pair gets stuck, and nothing is recorded twice, when workers are SIGKILLed.

Two `python worker.py` processes serve one task queue; a killer SIGKILLs one of them at random
moments and starts it again at once, while concurrent client drivers take pairs through the
whole lifecycle (updates retried with the same update id, the `state` query at every poll, as
the Web UI does). Afterwards it checks that every pair completed, that no workflow task failed
and every history replays, that the log holds each event once in the lifecycle's order, that
each notice was delivered and recorded once, that the hash chain is intact, and that the read
models equal a rebuild; and it reports the stalls the drivers saw.

    python -m chaos --pairs 30 --kills 30        servers of its own (chaos/__main__.py)
    pytest tests/e2e/test_chaos.py -s            the small CI variant, on the test servers

    config.py   sizes, rhythm, the policy of seconds and each pair's start input
    stack.py    worker processes, servers on free ports, the code fingerprint
    driver.py   one pair's lifecycle, retried through worker deaths, timed
    killer.py   the SIGKILL loop
    checks.py   what must hold afterwards
    report.py   the figures: one JSON line and a table
    run.py      one run, start to verdict
"""

from chaos.config import ChaosConfig

__all__ = ["ChaosConfig"]
