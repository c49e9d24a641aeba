"""A small bar chart of throughput, drawn as inline SVG on the server (no JavaScript, no CDN)."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from django_pq.store.reads import Minute

WIDTH = 600
HEIGHT = 120
#: Space under the bars for the time axis labels.
AXIS = 16


def throughput_svg(minutes: Sequence[Minute]) -> SafeString:
    """Stacked bars per minute: completed (green) under failed (red), with hover titles."""
    if not minutes:
        return format_html("{}", "")
    peak = max((minute.completed + minute.failed for minute in minutes), default=0) or 1
    slot = WIDTH / len(minutes)
    plot = HEIGHT - AXIS
    bars = []
    for index, minute in enumerate(minutes):
        x = index * slot
        done = plot * minute.completed / peak
        failed = plot * minute.failed / peak
        label = f"{minute.start:%H:%M} UTC: {minute.completed} completed, {minute.failed} failed"
        bars.append(
            (
                label,
                f"{x + 0.5:.1f}",
                f"{plot - done:.1f}",
                f"{max(slot - 1, 1):.1f}",
                f"{done:.1f}",
                f"{plot - done - failed:.1f}",
                f"{failed:.1f}",
            )
        )
    rects = format_html_join(
        "",
        '<g><title>{0}</title><rect class="pq-ok" x="{1}" y="{2}" width="{3}" height="{4}"/>'
        '<rect class="pq-failed" x="{1}" y="{5}" width="{3}" height="{6}"/></g>',
        bars,
    )
    first, last = minutes[0].start, minutes[-1].start
    return format_html(
        '<svg class="pq-chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="Tasks finished per minute, last {n} minutes; peak {peak}">'
        '<line x1="0" y1="{plot}" x2="{w}" y2="{plot}" class="pq-axis"/>{rects}'
        '<text x="0" y="{h}" class="pq-tick">{first}</text>'
        '<text x="{w}" y="{h}" text-anchor="end" class="pq-tick">{last} UTC</text>'
        '<text x="{w}" y="10" text-anchor="end" class="pq-tick">peak {peak}/min</text></svg>',
        w=WIDTH,
        h=HEIGHT,
        n=len(minutes),
        peak=peak if any(m.completed or m.failed for m in minutes) else 0,
        plot=plot,
        rects=rects,
        first=f"{first:%H:%M}",
        last=f"{last:%H:%M}",
    )
