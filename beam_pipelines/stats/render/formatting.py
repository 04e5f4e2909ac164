"""Number formatting shared by ``report.md``, ``report.html``, their figures and the terminal summary."""

from __future__ import annotations

import math


def human(n: float | None) -> str:
    """Short count, like the seed's table: 57.7M, 66.3K, 912."""
    if n is None:
        return "-"
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= size:
            return f"{n / size:.1f}{suffix}"
    return f"{n:,}" if isinstance(n, int) else f"{n:.3g}"


def human_bytes(n: int) -> str:
    """A byte count in binary units: 1.5 MB, 912 B."""
    for size, suffix in ((1 << 40, "TB"), (1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if n >= size:
            return f"{n / size:.1f} {suffix}"
    return f"{n} B"


def pct(part: int, whole: int, digits: int = 1) -> str:
    """``part`` as a percentage of ``whole`` with ``digits`` decimals; "-" when ``whole`` is 0."""
    return f"{100 * part / whole:.{digits}f}%" if whole else "-"


def ms(value: float | None) -> str:
    """Milliseconds with up to 3 decimals and no trailing zeros: 50 ms, 302,281.5 ms; "-" for none/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.3f}".rstrip("0").rstrip(".") + " ms"
