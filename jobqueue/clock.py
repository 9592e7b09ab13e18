"""Times the rules write, as plain values: "the database's now, plus N seconds".

The rules (:mod:`jobqueue.outcomes`) decide *which* time a column takes but
never build SQL; the statement builder (:mod:`jobqueue.sql`) turns a
:class:`DbTime` into ``now()`` or ``now() + interval``. Every timestamp the core
writes comes from the database clock, so hosts with skewed clocks agree.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DbTime:
    """The database clock at the moment of the write, ``plus_seconds`` later."""

    plus_seconds: float = 0.0

    def __add__(self, seconds: float) -> DbTime:
        return DbTime(self.plus_seconds + seconds)


#: The database's ``now()``.
NOW = DbTime()
