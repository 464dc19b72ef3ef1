"""Static SVG charts for the HTML report: drawn on the server, no script, no external asset, so
a saved or mailed report shows the same picture everywhere.

Every piece of text that reaches the markup goes through `esc`; numbers are formatted here.
Hover titles use SVG <title> elements, which browsers show without JavaScript.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
INK = "#1f2933"
MUTED = "#52606d"
GRID = "#e4e7eb"
BAR = "#2f6f9f"
ALERT = "#c0392b"
LINE = "#1d4e89"
BAND = "#9cc3e6"


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def fmt(value: float, step: float | None = None) -> str:
    """A tick or value label with as many decimals as `step` (or the value) needs."""
    if step is not None and step > 0:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    else:
        decimals = 0 if float(value).is_integer() else 1
    text = f"{value:,.{decimals}f}"
    return "0" if text in ("-0", "-0.0") else text


def nice_step(span: float, target_ticks: int) -> float:
    raw = span / max(target_ticks, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10.0 * magnitude


def nice_ticks(
    lo: float, hi: float, target_ticks: int = 5, *, integer: bool = False
) -> tuple[float, float, list[float]]:
    """A rounded domain that contains lo..hi and the ticks on it: (lo, hi, ticks). With
    `integer` (counts) no step is below 1."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("chart domain must be finite")
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < 1e-9:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, target_ticks)
    if integer:
        step = max(step, 1.0) if step != 2.5 else 2.0
    start = float(math.floor(lo / step + 1e-9) * step)
    end = float(math.ceil(hi / step - 1e-9) * step)
    count = round((end - start) / step)
    return start, end, [start + i * step for i in range(count + 1)]


@dataclass(frozen=True)
class Frame:
    """The plot area inside the SVG and the linear maps from data to pixels."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    x_lo: float = 0.0
    x_hi: float = 1.0
    y_lo: float = 0.0
    y_hi: float = 1.0

    @property
    def plot_left(self) -> float:
        return self.left

    @property
    def plot_right(self) -> float:
        return self.width - self.right

    @property
    def plot_top(self) -> float:
        return self.top

    @property
    def plot_bottom(self) -> float:
        return self.height - self.bottom

    def x(self, value: float) -> float:
        span = self.x_hi - self.x_lo
        return self.plot_left + (value - self.x_lo) / span * (self.plot_right - self.plot_left)

    def y(self, value: float) -> float:
        span = self.y_hi - self.y_lo
        return self.plot_bottom - (value - self.y_lo) / span * (self.plot_bottom - self.plot_top)


def _num(value: float) -> str:
    return f"{value:.1f}"


def _text(
    x: float,
    y: float,
    content: str,
    *,
    anchor: str = "middle",
    size: int = 12,
    fill: str = MUTED,
    weight: str = "normal",
    rotate: float | None = None,
) -> str:
    transform = f' transform="rotate({rotate:g} {_num(x)} {_num(y)})"' if rotate is not None else ""
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}"'
        f' fill="{fill}" font-weight="{weight}"{transform}>{esc(content)}</text>'
    )


def _svg(width: float, height: float, label: str, body: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width:g} {height:g}"'
        f' width="{width:g}" height="{height:g}" role="img" aria-label="{esc(label)}"'
        f' font-family="{esc(FONT)}">'
        f"<title>{esc(label)}</title>" + "".join(body) + "</svg>"
    )


def empty_chart(label: str, message: str, width: int = 640, height: int = 260) -> str:
    return _svg(
        width,
        height,
        label,
        [
            f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#f8f9fa"'
            f' stroke="{GRID}" rx="6"/>',
            _text(width / 2, height / 2, message, size=14),
        ],
    )


def _y_axis(frame: Frame, ticks: Sequence[float], title: str) -> list[str]:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else None
    out = []
    for t in ticks:
        y = frame.y(t)
        out.append(
            f'<line x1="{_num(frame.plot_left)}" x2="{_num(frame.plot_right)}" y1="{_num(y)}"'
            f' y2="{_num(y)}" stroke="{GRID}"/>'
        )
        out.append(_text(frame.plot_left - 6, y + 4, fmt(t, step), anchor="end", size=11))
    mid = (frame.plot_top + frame.plot_bottom) / 2
    out.append(_text(14, mid, title, size=12, fill=INK, rotate=-90))
    return out


def _x_axis_line(frame: Frame, title: str) -> list[str]:
    return [
        f'<line x1="{_num(frame.plot_left)}" x2="{_num(frame.plot_right)}"'
        f' y1="{_num(frame.plot_bottom)}" y2="{_num(frame.plot_bottom)}" stroke="{MUTED}"/>',
        f'<line x1="{_num(frame.plot_left)}" x2="{_num(frame.plot_left)}"'
        f' y1="{_num(frame.plot_top)}" y2="{_num(frame.plot_bottom)}" stroke="{MUTED}"/>',
        _text((frame.plot_left + frame.plot_right) / 2, frame.height - 8, title, size=12, fill=INK),
    ]


# ---------------------------------------------------------------- bar charts


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    hint: str | None = None
    highlight: bool = False


def _counts(bars: Sequence[Bar]) -> bool:
    return all(float(b.value).is_integer() for b in bars)


def bar_chart(
    bars: Sequence[Bar],
    *,
    label: str,
    x_title: str,
    y_title: str,
    width: int = 640,
    height: int = 280,
    empty_message: str = "No data in this window",
) -> str:
    """Vertical bars over categories; labels thin out when there are many bars."""
    if not bars:
        return empty_chart(label, empty_message, width, height)
    top = max(b.value for b in bars)
    y_lo, y_hi, ticks = nice_ticks(0.0, top if top > 0 else 1.0, 5, integer=_counts(bars))
    frame = Frame(width, height, left=58, right=12, top=18, bottom=48, y_lo=y_lo, y_hi=y_hi)
    slot = (frame.plot_right - frame.plot_left) / len(bars)
    gap = min(slot * 0.18, 8.0)
    label_every = max(1, math.ceil(len(bars) * 42 / (frame.plot_right - frame.plot_left)))
    body = _y_axis(frame, ticks, y_title)
    for i, bar in enumerate(bars):
        x = frame.plot_left + i * slot + gap / 2
        y = frame.y(bar.value)
        hint = bar.hint or f"{bar.label}: {fmt(bar.value)}"
        body.append(
            f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(slot - gap)}"'
            f' height="{_num(frame.plot_bottom - y)}" fill="{ALERT if bar.highlight else BAR}">'
            f"<title>{esc(hint)}</title></rect>"
        )
        if bar.value > 0 and slot >= 22:
            body.append(_text(x + (slot - gap) / 2, y - 4, fmt(bar.value), size=10, fill=INK))
        if i % label_every == 0:
            body.append(_text(x + (slot - gap) / 2, frame.plot_bottom + 16, bar.label, size=11))
    body += _x_axis_line(frame, x_title)
    return _svg(width, height, label, body)


def horizontal_bar_chart(
    bars: Sequence[Bar],
    *,
    label: str,
    x_title: str,
    width: int = 640,
    empty_message: str = "No data in this window",
) -> str:
    """One bar per row with its label on the left: for categories with long names."""
    row = 26
    height = 40 + 44 + row * max(len(bars), 1)
    if not bars:
        return empty_chart(label, empty_message, width, 140)
    longest = max(len(b.label) for b in bars)
    left = min(max(90, 7 * longest + 16), width // 2)
    top = max(b.value for b in bars)
    x_lo, x_hi, ticks = nice_ticks(0.0, top if top > 0 else 1.0, 5, integer=_counts(bars))
    frame = Frame(width, height, left=left, right=40, top=16, bottom=44, x_lo=x_lo, x_hi=x_hi)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else None
    body: list[str] = []
    for t in ticks:
        x = frame.x(t)
        body.append(
            f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{_num(frame.plot_top)}"'
            f' y2="{_num(frame.plot_bottom)}" stroke="{GRID}"/>'
        )
        body.append(_text(x, frame.plot_bottom + 16, fmt(t, step), size=11))
    for i, bar in enumerate(bars):
        y = frame.plot_top + i * row + 4
        x_end = frame.x(bar.value)
        hint = bar.hint or f"{bar.label}: {fmt(bar.value)}"
        body.append(
            f'<rect x="{_num(frame.plot_left)}" y="{_num(y)}"'
            f' width="{_num(max(x_end - frame.plot_left, 0.0))}" height="{row - 8}"'
            f' fill="{ALERT if bar.highlight else BAR}"><title>{esc(hint)}</title></rect>'
        )
        body.append(
            _text(frame.plot_left - 8, y + row / 2, bar.label, anchor="end", size=12, fill=INK)
        )
        body.append(_text(x_end + 6, y + row / 2, fmt(bar.value), anchor="start", size=11))
    body += _x_axis_line(frame, x_title)
    return _svg(width, height, label, body)


# ---------------------------------------------------------------- line with a band


@dataclass(frozen=True)
class BandPoint:
    x: float
    low: float
    mid: float
    high: float
    hint: str | None = None


def band_chart(
    points: Sequence[BandPoint],
    *,
    label: str,
    x_title: str,
    y_title: str,
    band_label: str = "10th–90th percentile",
    line_label: str = "median",
    width: int = 640,
    height: int = 300,
    empty_message: str = "No data in this window",
) -> str:
    """A median line over a shaded low–high band, points sorted by x."""
    if not points:
        return empty_chart(label, empty_message, width, height)
    pts = sorted(points, key=lambda p: p.x)
    x_lo, x_hi, x_ticks = nice_ticks(min(p.x for p in pts), max(p.x for p in pts), 6)
    y_lo, y_hi, y_ticks = nice_ticks(min(p.low for p in pts), max(p.high for p in pts), 5)
    frame = Frame(
        width,
        height,
        left=58,
        right=16,
        top=30,
        bottom=48,
        x_lo=x_lo,
        x_hi=x_hi,
        y_lo=y_lo,
        y_hi=y_hi,
    )
    body = _y_axis(frame, y_ticks, y_title)
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else None
    for t in x_ticks:
        body.append(_text(frame.x(t), frame.plot_bottom + 16, fmt(t, x_step), size=11))
        body.append(
            f'<line x1="{_num(frame.x(t))}" x2="{_num(frame.x(t))}" y1="{_num(frame.plot_bottom)}"'
            f' y2="{_num(frame.plot_bottom + 4)}" stroke="{MUTED}"/>'
        )
    upper = [f"{_num(frame.x(p.x))},{_num(frame.y(p.high))}" for p in pts]
    lower = [f"{_num(frame.x(p.x))},{_num(frame.y(p.low))}" for p in reversed(pts)]
    if len(pts) > 1:
        body.append(
            f'<polygon points="{" ".join(upper + lower)}" fill="{BAND}" fill-opacity="0.55"'
            f' stroke="none"/>'
        )
        median = " ".join(f"{_num(frame.x(p.x))},{_num(frame.y(p.mid))}" for p in pts)
        body.append(
            f'<polyline points="{median}" fill="none" stroke="{LINE}" stroke-width="2.5"'
            f' stroke-linejoin="round"/>'
        )
    for p in pts:
        x = frame.x(p.x)
        # A whisker shows the band where a polygon cannot (one point) and marks each bin.
        body.append(
            f'<line x1="{_num(x)}" x2="{_num(x)}" y1="{_num(frame.y(p.low))}"'
            f' y2="{_num(frame.y(p.high))}" stroke="{LINE}" stroke-opacity="0.5"/>'
        )
        hint = p.hint or f"{fmt(p.x)}: median {fmt(p.mid)} ({fmt(p.low)}–{fmt(p.high)})"
        body.append(
            f'<circle cx="{_num(x)}" cy="{_num(frame.y(p.mid))}" r="3.5" fill="{LINE}">'
            f"<title>{esc(hint)}</title></circle>"
        )
    legend_x = frame.plot_right - 250
    body += [
        f'<rect x="{_num(legend_x)}" y="8" width="18" height="10" fill="{BAND}"'
        f' fill-opacity="0.55"/>',
        _text(legend_x + 24, 17, band_label, anchor="start", size=11),
        f'<line x1="{_num(legend_x + 150)}" x2="{_num(legend_x + 168)}" y1="13" y2="13"'
        f' stroke="{LINE}" stroke-width="2.5"/>',
        _text(legend_x + 174, 17, line_label, anchor="start", size=11),
    ]
    body += _x_axis_line(frame, x_title)
    return _svg(width, height, label, body)
