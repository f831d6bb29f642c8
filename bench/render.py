"""Template render throughput: `python -m bench.render` (also run by `make bench`).

Measures the template service's pure render path (sandboxed Jinja, CSS inlining, text
generation) for a realistic ~20 KB transactional template that extends a layout and includes two
partials, with a loop and 10 variables: one cold render at a time (compile the template, layout
and partials, then render), and a 1,000-recipient batch that compiles once and renders per
recipient, as RenderService.RenderMessages does. Fetching from PostgreSQL is not included.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from services.template.render import Parts, Renderer

ROW = (
    "<tr><td class='item'>{{ item.name }}</td><td class='qty'>{{ item.qty }}</td>"
    "<td class='price'>{{ '%.2f'|format(item.price) }} {{ currency }}</td></tr>\n"
)
FILLER = (
    "<p class='legal'>"
    + "This receipt is provided for your records and is not a tax invoice. " * 4
    + "</p>\n"
)
# The shared frame: styles, header, a content block and the footer partial.
LAYOUT = (
    "<html><head><style>body{font-family:Arial} .item{padding:4px} .qty{text-align:right}"
    " .price{text-align:right;font-weight:bold} .legal{color:#666;font-size:11px}"
    " @media (max-width:600px){.item{padding:2px}}</style></head><body>"
    "<div class='header'><img src='https://example.com/logo.png' alt='Acme'></div>"
    "{% block content %}{% endblock %}"
    "{% include 'footer' %}</body></html>"
)
# Partial one: the order lines, looping over the items.
ORDER_LINES = "<table>{% for item in items %}" + ROW + "{% endfor %}</table>"
# Partial two: support links and the legal text that makes up most of the 20 KB.
FOOTER = (
    "<p><a href='https://example.com/orders/{{ order_id }}'>View your order</a> or "
    "<a href='mailto:{{ support_email }}'>contact support</a>.</p>" + FILLER * 68
)
HTML = (
    "{% extends 'base' %}{% block content %}"
    "<h1>Thanks for your order, {{ first_name }} {{ last_name }}!</h1>"
    "<p>Order {{ order_id }} placed on {{ order_date }} ships to {{ city }}, {{ country }}.</p>"
    "{% include 'order-lines' %}"
    "<p>Total: {{ '%.2f'|format(total) }} {{ currency }}</p>"
    "{% endblock %}"
)
DEPS = {
    "base": Parts("", LAYOUT, ""),
    "order-lines": Parts("", ORDER_LINES, ""),
    "footer": Parts("", FOOTER, ""),
}
SUBJECT = "Your order {{ order_id }} is confirmed"


def variables(i: int) -> dict[str, object]:
    return {
        "first_name": f"Ada{i}",
        "last_name": "Lovelace",
        "order_id": f"A-{i:06d}",
        "order_date": "2026-11-23",
        "city": "London",
        "country": "UK",
        "currency": "EUR",
        "support_email": "help@example.com",
        "total": 42.5 + i,
        "items": [{"name": f"Item <{n}>", "qty": n, "price": 9.99 * n} for n in range(1, 6)],
    }


def run(batch: int, repeats: int) -> str:
    parts = Parts(SUBJECT, HTML, "")
    single: list[float] = []
    for i in range(repeats):
        renderer = Renderer()  # a cold cache each time: compile + render
        start = time.perf_counter()
        renderer.render((f"t{i}", 1), parts, variables(i), deps=DEPS)
        single.append(time.perf_counter() - start)
    warm = Renderer()
    warm.render(("w", 1), parts, variables(0), deps=DEPS)
    start = time.perf_counter()
    for i in range(batch):
        warm.render(("w", 1), parts, variables(i), deps=DEPS)
    batch_seconds = time.perf_counter() - start
    size = len((HTML + LAYOUT + ORDER_LINES + FOOTER).encode())
    rendered = warm.render(("w", 1), parts, variables(0), deps=DEPS)
    return "\n".join(
        [
            "# Template render benchmark",
            "",
            f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
            f"- template: {size / 1024:.1f} KB HTML source ({len(rendered.html_body) / 1024:.1f} KB rendered):"
            " a layout, two partials, a loop of 5 rows, 10 variables; CSS inlined, text generated",
            "",
            "| case | renders/s | ms per render (p50) |",
            "|:---|---:|---:|",
            f"| single render, cold (compile + render) | {1 / statistics.mean(single):.0f} | "
            f"{statistics.median(single) * 1000:.2f} |",
            f"| {batch}-recipient batch, compiled once | {batch / batch_seconds:.0f} | {batch_seconds / batch * 1000:.2f} |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.render")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench/results/render.md"))
    args = parser.parse_args()
    table = run(args.batch, args.repeats)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
