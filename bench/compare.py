"""Pure parts of the side-by-side report: ratios, process-tree CPU, the comparison table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CaseRow:
    """One case measured on both sides; None where a side has no figure (and `note` says why)."""

    case: str
    unit: str
    postwire: float | None
    postfix: float | None
    note: str = ""


def ratio(postwire: float | None, postfix: float | None) -> float | None:
    """Postwire ÷ Postfix; None unless both figures exist and Postfix's is positive. For rates
    above 1 means Postwire is faster; for latencies above 1 means Postwire is slower."""
    if postwire is None or postfix is None or postfix <= 0 or math.isnan(postwire) or math.isnan(postfix):
        return None
    return postwire / postfix


def figure(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    # First column is a label (left-aligned); the rest are figures (right-aligned).
    align = [":---", *("---:" for _ in header[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def cases_table(rows: Sequence[CaseRow]) -> list[str]:
    header = ["case", "unit", "Postwire", "Postfix relay", "ratio (Postwire ÷ Postfix)", "note"]
    body = [
        [
            row.case,
            row.unit,
            figure(row.postwire),
            figure(row.postfix),
            ratio_text(ratio(row.postwire, row.postfix)),
            row.note,
        ]
        for row in rows
    ]
    return markdown_table(header, body)


@dataclass(frozen=True, slots=True)
class Rates:
    """Delivered per second: Postwire's single sends and SendBatch, Postfix's single sends."""

    single: float | None
    batch: float | None
    postfix: float | None


@dataclass(frozen=True, slots=True)
class Latencies:
    """Per-message samples in seconds."""

    postwire_idle: Sequence[float]
    postfix_idle: Sequence[float]
    postwire_half: Sequence[float]
    postfix_half: Sequence[float]
    postwire_half_accept: Sequence[float]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms_at(values: Sequence[float], q: float) -> float | None:
    found = percentile(values, q)
    return None if found is None else found * 1000


def case_rows(
    concurrency: int, batch_size: int, rates: Rates, lat: Latencies, postfix_note: str, batch_note: str
) -> list[CaseRow]:
    """The side-by-side table's rows; SendBatch is compared with Postfix's single-send rate of the
    same run, since Postfix has no batch call."""
    rows = [
        CaseRow(
            f"single sends, {concurrency} in flight, delivered",
            "msg/s",
            rates.single,
            rates.postfix,
            postfix_note,
        ),
        CaseRow(
            f"SendBatch of {batch_size}, delivered",
            "recipients/s",
            rates.batch,
            rates.postfix,
            batch_note or postfix_note,
        ),
    ]
    for q in (50, 99):
        rows.append(
            CaseRow(
                f"idle, 1 in flight, send→sink p{q}",
                "ms",
                ms_at(lat.postwire_idle, q),
                ms_at(lat.postfix_idle, q),
                postfix_note,
            )
        )
    for q in (50, 99):
        rows.append(
            CaseRow(
                f"half of max rate, send→sink p{q}",
                "ms",
                ms_at(lat.postwire_half, q),
                ms_at(lat.postfix_half, q),
                postfix_note,
            )
        )
    rows.append(
        CaseRow(
            "half of max rate, SendEmail accept p99",
            "ms",
            ms_at(lat.postwire_half_accept, 99),
            None,
            "Postwire only",
        )
    )
    return rows


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The parts of /proc/<pid>/stat a tree's CPU needs, in seconds."""

    ppid: int
    own: float  # utime + stime
    reaped: float  # cutime + cstime: children that exited and were waited for


def tree_cpu(stats: Mapping[int, ProcStat], root: int) -> float:
    """CPU of `root` and every live descendant, plus what their exited children used.

    A process's reaped children are in its cutime/cstime and no longer live, and a live child's
    time is not in its parent's cutime until it is reaped, so nothing is counted twice. PostgreSQL
    backends and Postfix's daemons come and go during a run; this keeps them all."""
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid].own + stats[pid].reaped
        todo += children.get(pid, [])
    return total


def parse_stat(raw: str, clock_ticks: int) -> ProcStat:
    """One /proc/<pid>/stat line. The command name may hold spaces and parentheses, so fields
    resume after the last ')'."""
    fields = raw[raw.rindex(")") + 2 :].split()
    # proc(5) fields 4 (ppid) and 14-17 (utime stime cutime cstime), counted from 1.
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return ProcStat(ppid, (utime + stime) / clock_ticks, (cutime + cstime) / clock_ticks)


def per_message_ms(seconds: float | None, messages: int) -> float | None:
    if seconds is None or messages <= 0 or math.isnan(seconds):
        return None
    return seconds * 1000 / messages
