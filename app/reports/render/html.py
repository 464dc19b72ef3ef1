"""The fleet summary as one self-contained HTML page: inline CSS, inline SVG charts, no script
and no external asset, so it opens the same from a browser, a file or a mail attachment.

Every string from the data (serials, pack types, reasons, OEM codes) is escaped; the page also
carries a Content-Security-Policy meta tag that forbids scripts, in case one ever slipped by.
"""

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

from app.reports.figures import FADE_CONFIDENCE
from app.reports.render.svg import (
    BandPoint,
    Bar,
    band_chart,
    bar_chart,
    esc,
    fmt,
    horizontal_bar_chart,
)
from app.reports.schemas import Anomaly, FleetSummary, QuarantinedBattery, SohPercentiles

# Banned everything but inline styles and data: images; the page needs nothing else.
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
# Below this SoH a traction battery is commonly taken out of vehicle service.
END_OF_LIFE_SOH_PCT = 80.0
DAYS_PER_YEAR = 365.25

ANOMALY_KINDS = {
    "fast_fade": "Fast capacity fade",
    "running_hot": "Running hot",
    "hot_cell": "Hot cell",
    "cell_imbalance": "Growing cell imbalance",
    "below_soh_floor": "Below the SoH floor",
}

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f6f8;color:#1f2933;
 font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif}
main{max-width:1320px;margin:0 auto;padding:24px}
header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;color:#52606d}
h2{font-size:17px;margin:0 0 4px}
.note{color:#52606d;font-size:12.5px;margin:0 0 10px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(124px,1fr));gap:12px;
 margin:20px 0}
.card{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:12px 14px}
.card .v{font-size:24px;font-weight:600}
.card .f{white-space:nowrap}
.card .u{font-size:14px;font-weight:500;color:#52606d}
.card .k{color:#52606d;font-size:12.5px}
.card.alert .v{color:#c0392b}
.grid{display:flex;flex-wrap:wrap;gap:16px}
section.panel{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:16px;
 margin-bottom:16px;flex:1 1 600px;min-width:0}
svg.chart{width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f8f9fa;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.empty{color:#52606d;font-style:italic}
footer{color:#52606d;font-size:12px;margin-top:8px}
@media (max-width:640px){main{padding:12px}.card .v{font-size:20px}}
@media print{body{background:#fff}section.panel,.card{break-inside:avoid}}
"""


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _maybe(value: float | None, decimals: int = 1) -> str:
    return "—" if value is None else f"{value:,.{decimals}f}"


def _card(value: str, key: str, *, unit: str = "", alert: bool = False) -> str:
    cls = "card alert" if alert else "card"
    small = f' <span class="u">{esc(unit)}</span>' if unit else ""
    return (
        f'<div class="{cls}"><div class="v"><span class="f">{esc(value)}</span>{small}</div>'
        f'<div class="k">{esc(key)}</div></div>'
    )


def _panel(title: str, note: str, content: str) -> str:
    return (
        f'<section class="panel"><h2>{esc(title)}</h2><p class="note">{esc(note)}</p>'
        f"{content}</section>"
    )


def _table(headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]], empty: str) -> str:
    """headers: (title, numeric); cells arrive unescaped."""
    body = [
        "<tr>"
        + "".join(
            f'<td class="n">{esc(c)}</td>' if numeric else f"<td>{esc(c)}</td>"
            for c, (_, numeric) in zip(row, headers, strict=True)
        )
        + "</tr>"
        for row in rows
    ]
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(
        f'<th class="n">{esc(h)}</th>' if n else f"<th>{esc(h)}</th>" for h, n in headers
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# ---------------------------------------------------------------- charts


def soh_histogram_chart(summary: FleetSummary) -> str:
    bins = {round(b.lower_pct, 6): b for b in summary.soh_histogram}
    bars: list[Bar] = []
    if bins:
        width = summary.soh_histogram[0].upper_pct - summary.soh_histogram[0].lower_pct
        # Empty bins between the lowest and 100 % are drawn as zero, so the axis is continuous.
        lower = min(bins)
        while lower < 100.0 - 1e-9:
            b = bins.get(round(lower, 6))
            n = b.batteries if b else 0
            upper = lower + width
            bars.append(
                Bar(
                    label=f"{fmt(lower)}–{fmt(upper)}",
                    value=n,
                    hint=f"SoH {fmt(lower)}–{fmt(upper)} %: {n} batteries",
                    highlight=upper <= END_OF_LIFE_SOH_PCT,
                )
            )
            lower = upper
    return bar_chart(
        bars,
        label="Histogram of state of health",
        x_title="State of health (%)",
        y_title="Batteries",
        empty_message="No battery reported its health in this window",
    )


def _band_points(
    bins: Sequence[SohPercentiles], scale: float, unit: str, decimals: int
) -> list[BandPoint]:
    return [
        BandPoint(
            x=(b.bin_lower + b.bin_upper) / 2 / scale,
            low=b.soh_p10_pct,
            mid=b.soh_median_pct,
            high=b.soh_p90_pct,
            hint=(
                f"{b.bin_lower / scale:,.{decimals}f}–{b.bin_upper / scale:,.{decimals}f} {unit}:"
                f" median {b.soh_median_pct:.1f} %, 10th–90th percentile"
                f" {b.soh_p10_pct:.1f}–{b.soh_p90_pct:.1f} % ({b.batteries} batteries)"
            ),
        )
        for b in bins
    ]


def fade_curve_chart(summary: FleetSummary) -> str:
    return band_chart(
        _band_points(summary.soh_by_cycles, 1.0, "cycles", 0),
        label="Median state of health against full-equivalent cycles",
        x_title="Full-equivalent cycles (bin midpoint)",
        y_title="State of health (%)",
        empty_message="No battery reported its health in this window",
    )


def soh_by_age_chart(summary: FleetSummary) -> str:
    return band_chart(
        _band_points(summary.soh_by_age, DAYS_PER_YEAR, "years", 2),
        label="Median state of health against age",
        x_title="Age (years, bin midpoint)",
        y_title="State of health (%)",
        empty_message="No battery with a manufacturing date reported its health",
    )


def swaps_chart(summary: FleetSummary) -> str:
    s = summary.swaps
    bars = [
        Bar("completed", s.completed),
        Bar("rejected", s.rejected, highlight=True),
        Bar("aborted", s.aborted),
    ]
    if not any(b.value for b in bars):
        bars = []
    return horizontal_bar_chart(
        bars, label="Swaps by outcome", x_title="Swaps", empty_message="No swaps in this window"
    )


def rejections_chart(summary: FleetSummary) -> str:
    reasons = sorted(summary.swaps.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    return horizontal_bar_chart(
        [Bar(reason, n, highlight=True) for reason, n in reasons],
        label="Rejected swaps by reason",
        x_title="Rejected swaps",
        empty_message="No rejected swaps in this window",
    )


# ---------------------------------------------------------------- tables


def _figure(a: Anomaly) -> str:
    """The value, with its confidence interval where it comes from a fit."""
    if a.value_low is None or a.value_high is None:
        return f"{a.value:,.2f}"
    return f"{a.value:,.2f} ({a.value_low:,.2f} to {a.value_high:,.2f})"


def anomalies_table(anomalies: Sequence[Anomaly]) -> str:
    return _table(
        [
            ("Battery", False),
            ("Pack type", False),
            ("Finding", False),
            ("Detail", False),
            ("Evidence", False),
            (f"Value ({FADE_CONFIDENCE:.2%} interval)", True),
            ("Cohort median", True),
            ("Robust z", True),
            ("Cohort size", True),
        ],
        (
            (
                a.serial,
                a.pack_type_code,
                ANOMALY_KINDS.get(a.kind, a.kind),
                a.reason,
                a.evidence,
                _figure(a),
                f"{a.cohort_median:,.2f}",
                "" if a.robust_z is None else f"{a.robust_z:,.1f}",
                f"{a.cohort_size:,}",
            )
            for a in anomalies
        ),
        "No anomalies: every battery is in line with its cohort.",
    )


def quarantined_table(batteries: Sequence[QuarantinedBattery]) -> str:
    return _table(
        [
            ("Battery", False),
            ("Pack type", False),
            ("SoH %", True),
            ("Since", False),
            ("Note", False),
        ],
        (
            (q.serial, q.pack_type_code, _maybe(q.soh_pct), _when(q.quarantined_at), q.note or "")
            for q in batteries
        ),
        "No battery is quarantined.",
    )


def pack_type_table(summary: FleetSummary) -> str:
    return _table(
        [("Pack type", False), ("Batteries", True)],
        ((code, f"{n:,}") for code, n in summary.counts.by_pack_type.items()),
        "No batteries.",
    )


# ---------------------------------------------------------------- page


def energy(kwh: float) -> tuple[str, str]:
    """(figure, unit) with at most four significant digits before the unit."""
    if kwh >= 10_000_000:
        figure, unit = kwh / 1_000_000, "GWh"
    elif kwh >= 10_000:
        figure, unit = kwh / 1_000, "MWh"
    else:
        figure, unit = kwh, "kWh"
    return (f"{figure:,.1f}" if 0 < figure < 100 else f"{figure:,.0f}"), unit


def headline(summary: FleetSummary) -> str:
    c, s = summary.counts, summary.swaps
    attempts = s.completed + s.rejected + s.aborted
    rejected_share = f"{s.rejected / attempts * 100:.1f}" if attempts else "—"
    charged, charged_unit = energy(summary.energy_charged_kwh)
    return (
        '<div class="cards">'
        + "".join(
            [
                _card(f"{c.total:,}", "batteries in the fleet"),
                _card(f"{c.in_service:,}", "in service"),
                _card(f"{c.quarantined:,}", "quarantined", alert=c.quarantined > 0),
                _card(f"{c.retired:,}", "retired"),
                _card(f"{summary.batteries_reporting:,}", "reported their health in the window"),
                _card(charged, "energy charged at stations", unit=charged_unit),
                _card(f"{s.completed:,}", "swaps completed"),
                _card(
                    rejected_share,
                    "of swap attempts rejected",
                    unit="%" if attempts else "",
                    alert=s.rejected > 0,
                ),
                _card(f"{len(summary.anomalies):,}", "anomalies", alert=bool(summary.anomalies)),
            ]
        )
        + "</div>"
    )


def render_fleet_summary(summary: FleetSummary) -> str:
    w = summary.window
    fleet = f"OEM {w.oem_code}" if w.oem_code else "Whole fleet"
    title = f"Battery fleet report: {fleet}, {w.day_from} to {w.day_to}"
    cycles_note = (
        f"Each battery's latest state of health in the window, binned by its full-equivalent"
        f" cycles ({fmt(summary.cycle_bin_width)} per bin): the line is the median, the band"
        f" the 10th to 90th percentile."
    )
    age_note = (
        f"The same against age at the end of the window ({summary.age_bin_days} days per bin)."
    )
    panels = [
        '<div class="grid">',
        _panel(
            "State of health",
            f"Latest health record of each of the {summary.batteries_reporting:,} reporting"
            f" batteries, in 5 % bins; red bars are at or below {END_OF_LIFE_SOH_PCT:.0f} %.",
            soh_histogram_chart(summary),
        ),
        _panel("Capacity fade by cycles", cycles_note, fade_curve_chart(summary)),
        "</div>",
        '<div class="grid">',
        _panel("State of health by age", age_note, soh_by_age_chart(summary)),
        _panel(
            "Swaps",
            "Swap attempts in the window that involved this fleet's batteries, by outcome.",
            swaps_chart(summary) + rejections_chart(summary),
        ),
        "</div>",
        _panel(
            "Anomalies",
            "Batteries far from their cohort (same OEM and pack type): robust z-score above the"
            " threshold. Each is a quarantine recommendation for the operator, not a quarantine.",
            anomalies_table(summary.anomalies),
        ),
        '<div class="grid">',
        _panel(
            "Quarantined batteries",
            "Batteries in quarantine now.",
            quarantined_table(summary.quarantined),
        ),
        _panel("Batteries by pack type", "The whole fleet, every state.", pack_type_table(summary)),
        "</div>",
    ]
    return (
        "<!DOCTYPE html>"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CONTENT_SECURITY_POLICY)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{esc(title)}</h1>"
        f"<p>UTC days {esc(w.day_from)} to {esc(w.day_to)}, both inclusive. Generated"
        f" {esc(_when(summary.generated_at))}.</p></header>"
        + headline(summary)
        + "".join(panels)
        + "<footer>Figures come from the per-battery daily aggregates of swapfleet. Hover a bar"
        " or point for its exact figures.</footer>"
        "</main></body></html>"
    )


def file_name(summary: FleetSummary) -> str:
    w = summary.window
    who = re.sub(r"[^A-Za-z0-9_.-]+", "_", w.oem_code) if w.oem_code else "fleet"
    return f"fleet-summary_{who}_{w.day_from}_{w.day_to}.html"


def response_headers(summary: FleetSummary) -> dict[str, str]:
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Content-Disposition": f'inline; filename="{file_name(summary)}"',
        "X-Content-Type-Options": "nosniff",
    }
