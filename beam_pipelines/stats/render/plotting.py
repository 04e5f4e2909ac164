"""What every figure of the reports shares: matplotlib loaded on demand, the house style and palette,
PNG encoding, and the drawing helpers both report kinds use.

matplotlib is optional (the ``report`` extra): without it :func:`pyplot` raises
:class:`MissingMatplotlib`, and the stats job writes ``report.json`` and ``report.md`` only.
"""

from __future__ import annotations

import base64
import io

from beam_pipelines.stats.render.formatting import human, pct

BLUE, ORANGE, GREEN, RED, GREY = "#2a6fbb", "#e07b39", "#3a9e6f", "#c0392b", "#8a8f98"


class MissingMatplotlib(RuntimeError):
    """matplotlib is not installed (it comes with the ``report`` extra)."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend with the reports' style; :class:`MissingMatplotlib` without it."""
    # matplotlib imported here, not at the top: it is optional (the base install lacks it) and costs about
    # 0.8 s of start-up (matplotlib and pyplot, `python -X importtime` on the 2-core dev machine shared with
    # other jobs) that report.md, report.json and --no_html never need.
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingMatplotlib(
            "matplotlib is not installed; install the 'report' extra (pip install 'ping-llm[report]')"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": "#e4e6ea",
            "grid.linewidth": 0.6,
            "axes.axisbelow": True,
            "axes.titlesize": 10,
            "legend.frameon": False,
        }
    )
    return plt


def png(plt, fig) -> str:
    """``fig`` as a base64 PNG; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def empty(ax, text: str = "no data"):
    """An axes with nothing to draw: ``text`` in its middle, no ticks, no grid."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=GREY, fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def _count_tick(value: float, _position) -> str:
    return human(int(value)) if value == int(value) else f"{value:g}"


def count_axis(ax, axis: str = "y"):
    """Ticks of the ``axis`` ("x" or "y") as short counts (66.3K, 57.7M)."""
    # matplotlib wraps a plain function in a FuncFormatter, so matplotlib.ticker need not be imported here.
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(_count_tick)


def reasons_figure(plt, by_reason: dict[str, int], total: int | None):
    """Horizontal bars of rejected rows by reason, each with its share of ``total`` when one is given."""
    fig, ax = plt.subplots(figsize=(6.4, max(2.2, 0.32 * len(by_reason) + 1.2)))
    if not by_reason:
        empty(ax, "no rejected rows")
        return fig
    labels, values = list(by_reason)[::-1], list(by_reason.values())[::-1]
    ax.barh(range(len(values)), values, color=RED)
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:,}" + (f" ({pct(v, total, 3)})" if total else ""), va="center", fontsize=7, color="#444")
    ax.set_xlabel("rows")
    count_axis(ax, "x")
    ax.margins(x=0.25)
    ax.grid(axis="y", visible=False)
    return fig
