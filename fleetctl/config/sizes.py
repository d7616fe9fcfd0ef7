"""Value types used across configuration: durations ("30s", "5m") and host counts ("10%", 3)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION = 31 * 86400.0


class Duration(float):
    """Seconds. Accepts a number (seconds) or a string with a unit: `500ms`, `30s`, `5m`, `1h`."""

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, bool):
            raise ValueError("expected a duration such as 30s, 5m or a number of seconds")  # noqa: TRY004 - pydantic reports ValueError
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
        else:
            raise ValueError(f"expected a duration such as 30s, 5m or a number of seconds, got {value!r}")
        if seconds < 0 or math.isnan(seconds):
            raise ValueError("a duration cannot be negative")
        if seconds > MAX_DURATION:
            # Windows counts service and task timeouts in 32-bit milliseconds (49.7 days); nothing fleetctl waits
            # for is sensibly longer than a month.
            raise ValueError(f"expected at most 31 days (744h), got {value!r}")
        return cls(seconds)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(float)
        )


@dataclass(frozen=True)
class Size:
    """A number of hosts: an absolute count, or a percentage of the hosts targeted."""

    value: float
    percent: bool

    @classmethod
    def parse(cls, value: Any) -> Size:
        if isinstance(value, bool):
            raise ValueError("expected a host count (3) or a percentage (10%)")  # noqa: TRY004 - pydantic reports ValueError
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"expected a host count (3) or a percentage (10%), got {value!r}: it cannot be "
                                 "negative")
            number, percent = float(value), False
        elif isinstance(value, str):
            text = value.strip()
            m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%?)", text)
            if not m:
                raise ValueError(f"expected a host count (3) or a percentage (10%), got {value!r}")
            number, percent = float(m.group(1)), bool(m.group(2))
            if not percent and not number.is_integer():
                raise ValueError(f"a host count must be a whole number, got {value!r}")
        else:
            raise ValueError(f"expected a host count (3) or a percentage (10%), got {value!r}")  # noqa: TRY004
        if percent and number > 100:
            raise ValueError(f"a percentage must be at most 100%, got {value!r}")
        return cls(number, percent)

    def hosts(self, total: int) -> int:
        """How many hosts this is out of `total`: percentages round up; capped at `total`."""
        if self.percent:
            count = math.ceil(self.value * total / 100 - 1e-9)
        else:
            count = int(self.value)
        return min(count, total)

    @property
    def is_zero(self) -> bool:
        return self.value == 0

    def __str__(self) -> str:
        number = int(self.value) if self.value.is_integer() else self.value
        return f"{number}%" if self.percent else str(number)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda v: v if isinstance(v, Size) else cls.parse(v),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )
