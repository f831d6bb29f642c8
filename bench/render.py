"""Template render throughput: `python -m bench.render` (also run by `make bench`).

Measures the template service's pure render path (sandboxed Jinja, CSS inlining, text
generation) for a realistic ~20 KB transactional template that extends a layout and includes two
partials, with a loop and 10 variables: one cold render at a time (compile the template, layout
and partials, then render), and a 1,000-recipient batch that compiles once and renders per
recipient, as RenderService.RenderMessages does. Fetching from PostgreSQL is not included.

Then isolation: another tenant's small render, issued every 20 ms (open loop, so time spent
waiting for a blocked event loop counts), through the render pool with no runaway render, and with
as many runaway renders (nested loops that spin until the time limit) in flight as there are
workers; for comparison, the same on the event loop as the service rendered before the pool.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from libs.errors import InvalidArgument
from libs.mail.parts import Parts
from services.template.render import Renderer
from services.template.render_pool import RenderPool

SPIN = Parts("s", "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", "")
SMALL = Parts("Hello {{ name }}", "<p>Hi {{ name }}, order {{ order_id }}</p>", "")

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


Render = Callable[[str, Parts, str], Awaitable[Parts]]


async def _small_latencies(render: Render, seconds: float, interval: float = 0.02) -> list[float]:
    """Latency of each small render from the moment it was due, so a stalled loop counts."""
    latencies: list[float] = []

    async def one(due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await render("other-tenant", SMALL, "small")
        latencies.append(time.perf_counter() - due)

    start = time.perf_counter()
    # All scheduled up front: a stalled loop delays the renders due meanwhile, not the schedule.
    tasks = [asyncio.create_task(one(start + i * interval)) for i in range(int(seconds / interval))]
    await asyncio.gather(*tasks)
    return latencies


async def _with_runaways(render: Render, tenants: list[str], seconds: float) -> list[float]:
    stop = asyncio.Event()

    async def runaway(tenant: str) -> None:
        while not stop.is_set():
            try:
                await render(tenant, SPIN, "spin")
            except InvalidArgument:
                pass

    spinning = [asyncio.create_task(runaway(t)) for t in tenants]
    await asyncio.sleep(0.2)
    try:
        return await _small_latencies(render, seconds)
    finally:
        stop.set()
        await asyncio.gather(*spinning)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def isolation(workers: int, seconds: float) -> list[str]:
    pool = RenderPool(workers=workers, memory_mb=512, time_limit_seconds=2.0)
    await pool.start()

    async def pooled(tenant: str, parts: Parts, key: str) -> Parts:
        variables = {"name": "Ada", "order_id": "A-1"}
        return await pool.render(tenant, [key, 1], parts, variables, mjml=False, deps={}, name=key)

    renderer = Renderer(time_limit_seconds=2.0)

    async def in_loop(tenant: str, parts: Parts, key: str) -> Parts:
        await asyncio.sleep(0)
        return renderer.render((key, 1), parts, {"name": "Ada", "order_id": "A-1"}, name=key)

    try:
        cases = [
            ("pool, baseline", await _small_latencies(pooled, seconds)),
            (
                f"pool, {workers} runaway renders of one tenant",
                await _with_runaways(pooled, ["spinner"] * workers, seconds),
            ),
            (
                f"pool, {workers} runaway renders of {workers} tenants (every worker spinning)",
                await _with_runaways(pooled, [f"spinner-{i}" for i in range(workers)], seconds),
            ),
            ("event loop (before the pool), baseline", await _small_latencies(in_loop, seconds)),
            (
                f"event loop (before the pool), {workers} runaway renders",
                await _with_runaways(in_loop, ["spinner"] * workers, seconds),
            ),
        ]
    finally:
        await pool.close()
    base = _p(cases[0][1], 0.99)
    rows = [
        f"| {name} | {len(lat)} | {_p(lat, 0.5):.1f} | {_p(lat, 0.99):.1f} | {_p(lat, 0.99) / base:.1f}x |"
        for name, lat in cases
    ]
    return [
        f"Another tenant's small render, one due every 20 ms for {seconds:g} s; {workers} workers,"
        " time limit 2 s; target: p99 with runaways <= 2x the pool baseline.",
        "",
        "| case | renders | p50 ms | p99 ms | p99 / pool baseline |",
        "|:---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.render")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/render.md"))
    args = parser.parse_args()
    table = run(args.batch, args.repeats) + "\n".join(
        ["", "## Isolation", "", *asyncio.run(isolation(args.workers, args.seconds))]
    )
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)


if __name__ == "__main__":
    main()
