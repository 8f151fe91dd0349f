"""What differs between the Python versions zootui supports (3.10 and later), in one place."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum

    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    from enum import Enum

    import tomli as tomllib

    class StrEnum(str, Enum):
        """Members are their values as text: equal to them, formatted and printed as them."""

        __str__ = str.__str__
        __format__ = str.__format__


__all__ = ["StrEnum", "tomllib"]
