"""Durations and rates as a user writes them (30s, 5m, 4M), for flags and the
config file alike; bad input raises ConfigError, the command line turns it
into its own usage error."""

from __future__ import annotations

import math

from reconcile.errors import ConfigError


def parse_duration(text: str) -> float:
    """seconds in 30s, 5m, 1h or a bare number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text[-1:] in units else float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a duration; use e.g. 30s, 5m, 1h") from None
    if not math.isfinite(seconds) or seconds < 0:  # -5s once meant 'no retry' silently
        raise ConfigError(f"{text!r} is not a duration: it must be 0 or more, e.g. 30s, 5m, 1h")
    return seconds


def parse_rate(text: str) -> float:
    """bytes per second in 500K, 4M, 1G (K and M are 1024 and 1024²), with an optional B or /s."""
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    t = text.strip().lower().removesuffix("b").removesuffix("/s")
    unit = t[-1:] if t[-1:] in units else ""
    try:
        value = float(t[: len(t) - len(unit)]) * units[unit]
    except ValueError:
        raise ConfigError(f"{text!r} is not a rate; use bytes per second like 500K or 4M") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{text!r} is not a rate: it must be more than 0, e.g. 500K or 4M")
    return value
