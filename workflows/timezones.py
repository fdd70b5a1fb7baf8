"""Time zones for the workflow: IANA names checked and applied through `zoneinfo`.

`zoneinfo` reads a tz database from disk, which the workflow sandbox forbids (inside it,
`ZoneInfo` is a restricted proxy that `datetime` refuses). So `workflows/pair.py` imports this
module *passed through* the sandbox: these functions run with the real `zoneinfo`, each zone is
read once per process and cached, and workflow code only ever sees datetimes.

Zones come from the `tzdata` package the project depends on, never from the machine: two workers
with different system databases would otherwise judge (and replay) the same session differently.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources

# Names zoneinfo accepts but that mean "whatever this server is set to": not a person's zone.
_MACHINE_DEPENDENT = {"localtime", "posixrules", "Factory"}
_IANA_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")


@lru_cache(maxsize=512)
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    if not name or name in _MACHINE_DEPENDENT or not _IANA_NAME.fullmatch(name):
        return None
    try:
        with resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).open("rb") as data:
            return zoneinfo.ZoneInfo.from_file(data, key=name)
    except (OSError, ValueError):  # not in the database, or a folder such as "Europe"
        return None


def zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The zone `name` from the project's tz database, or None if it is not an IANA zone.

    Activities and tools use this too, so that an e-mail shows a time under the same rules the
    workflow checked it with."""
    return _zone(name)


def is_known(name: str) -> bool:
    """Whether `name` is an IANA time zone of the tz database, such as Europe/Paris."""
    return _zone(name) is not None


def to_local(moment: datetime, name: str) -> datetime:
    """`moment` (timezone-aware) as wall-clock time in the zone `name`."""
    zone = _zone(name)
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}")
    return moment.astimezone(zone)


def localize(wall_clock: datetime, name: str) -> datetime:
    """A naive wall-clock time read in the zone `name`, made timezone-aware.

    A time the clocks pass twice (when they go back) is its first occurrence, before the change
    (`fold=0`); a time they skip (when they go forward) is the caller's to refuse (`skipped`)."""
    zone = _zone(name)
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}")
    return wall_clock.replace(tzinfo=zone)


def skipped(wall_clock: datetime, name: str) -> datetime | None:
    """If the clocks skip `wall_clock` in zone `name` (it does not exist there), the same moment
    on the new clock (02:30 when Paris goes from 02:00 to 03:00 gives 03:30), naive; else None."""
    zone = _zone(name)
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}")
    # A skipped time read with the offset before the change lands, on the way back, after the gap.
    back = wall_clock.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return None if back == wall_clock else back


def shown(moment: datetime, name: str) -> str:
    """A time as a person reads it, in their zone and naming it: `Tue 8 Dec 2026 10:00 Europe/Paris`."""
    local = to_local(moment, name)
    return f"{local:%a} {local.day} {local:%b %Y %H:%M} {name}"
