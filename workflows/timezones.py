"""Time zones for the workflow: IANA names checked and applied through `zoneinfo`.

`zoneinfo` reads the system's tz database from disk, which the workflow sandbox forbids (inside
it, `ZoneInfo` is a restricted proxy that `datetime` refuses). So `workflows/pair.py` imports
this module *passed through* the sandbox: these functions run with the real `zoneinfo`, the
database is read once per process and cached, and workflow code only ever sees datetimes.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from functools import lru_cache

# Names zoneinfo accepts but that mean "whatever this server is set to": not a person's zone.
_MACHINE_DEPENDENT = {"localtime", "posixrules", "Factory"}


@lru_cache(maxsize=512)
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    if not name or name in _MACHINE_DEPENDENT or name != name.strip():
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


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
    """A naive wall-clock time read in the zone `name`, made timezone-aware."""
    zone = _zone(name)
    if zone is None:
        raise ValueError(f"unknown time zone {name!r}")
    return wall_clock.replace(tzinfo=zone)
