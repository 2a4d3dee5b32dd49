"""Units of measure and their normalization.

Active energy is normalized to kWh (Wh / 1000, MWh * 1000). Reactive (varh) and apparent
(VAh) energy are scaled to their kilo unit and keep that unit: they are never added to kWh.
Unit names are matched case-insensitively (NEM12 files carry both ``KWH`` and ``kWh``).
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["ENERGY_UNIT", "NormalizedUnit", "normalize_unit"]

ENERGY_UNIT: Final = "kWh"


class NormalizedUnit(NamedTuple):
    unit: str
    """The unit the value is expressed in after normalization."""
    factor: float
    """Multiply a value in the source unit by this to get ``unit``."""


_UNITS: Final[dict[str, NormalizedUnit]] = {
    "wh": NormalizedUnit("kWh", 0.001),
    "kwh": NormalizedUnit("kWh", 1.0),
    "mwh": NormalizedUnit("kWh", 1000.0),
    "varh": NormalizedUnit("kvarh", 0.001),
    "kvarh": NormalizedUnit("kvarh", 1.0),
    "mvarh": NormalizedUnit("kvarh", 1000.0),
    "vah": NormalizedUnit("kVAh", 0.001),
    "kvah": NormalizedUnit("kVAh", 1.0),
    "mvah": NormalizedUnit("kVAh", 1000.0),
}


def normalize_unit(unit: str) -> NormalizedUnit | None:
    """The normalized unit and factor for ``unit``, or None when the unit is unknown."""
    return _UNITS.get(unit.strip().lower())
