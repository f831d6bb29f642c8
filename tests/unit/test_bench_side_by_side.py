"""The benchmark's pure parts: the private Postfix relay's configuration, ratios, process-tree CPU
and the tables it prints. No timings are asserted."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bench.__main__ import percentile, results_table
from bench.compare import (
    CaseRow,
    Latencies,
    ProcStat,
    Rates,
    case_rows,
    cases_table,
    parse_stat,
    ratio,
    tree_cpu,
)
from bench.postfix import RelayLayout, main_cf, master_cf, smtp_source_command

LAYOUT = RelayLayout(Path("/tmp/pw-bench/postfix"), listen_port=40025, sink_port=40026)


def settings(text: str) -> dict[str, str]:
    return dict((k.strip(), v.strip()) for k, v in (line.split("=", 1) for line in text.splitlines()))


def test_the_relay_listens_on_loopback_and_relays_everything_to_the_sink() -> None:
    conf = settings(main_cf(LAYOUT))
    assert conf["inet_interfaces"] == "127.0.0.1"
    assert conf["relayhost"] == "[127.0.0.1]:40026"
    assert conf["mydestination"] == ""  # no local delivery
    assert conf["local_transport"].startswith("error:")
    assert conf["queue_directory"] == "/tmp/pw-bench/postfix/queue"
    assert conf["data_directory"] == "/tmp/pw-bench/postfix/data"
    # The log file must sit under a permitted prefix, or `postfix start` refuses silently.
    assert conf["maillog_file"].startswith(conf["maillog_file_prefixes"])


def test_the_smtp_listener_is_on_the_free_port_and_nothing_is_chrooted() -> None:
    lines = [line.split() for line in master_cf(LAYOUT).splitlines()]
    listeners = [fields for fields in lines if fields[1] == "inet"]
    assert listeners == [["127.0.0.1:40025", "inet", "n", "-", "n", "-", "-", "smtpd"]]
    assert all(fields[4] == "n" for fields in lines)  # chroot column
    assert {"qmgr", "cleanup", "smtp", "relay", "postlog"} <= {fields[0] for fields in lines}
    assert not any(fields[0] == "local" for fields in lines)


def test_smtp_source_sends_the_file_with_the_sessions_asked_for() -> None:
    command = smtp_source_command(
        40025,
        messages=2000,
        sessions=64,
        message_file=Path("/m.txt"),
        sender="a@x.example",
        recipient="b@x.example",
    )
    assert command[-1] == "127.0.0.1:40025"
    pairs = dict(itertools.pairwise(command))
    assert pairs["-s"] == "64" and pairs["-m"] == "2000" and pairs["-F"] == "/m.txt"
    assert "-N" in command  # a distinct recipient per message


def test_ratio_is_postwire_over_postfix_and_absent_without_both() -> None:
    assert ratio(150.0, 100.0) == 1.5
    assert ratio(None, 100.0) is None
    assert ratio(150.0, None) is None
    assert ratio(150.0, 0.0) is None
    assert ratio(float("nan"), 100.0) is None


def test_percentiles_interpolate_between_samples() -> None:
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_tree_cpu_counts_live_descendants_and_reaped_children_once() -> None:
    stats = {
        10: ProcStat(ppid=1, own=1.0, reaped=2.0),  # the postmaster; 2 s from backends that exited
        11: ProcStat(ppid=10, own=0.5, reaped=0.0),
        12: ProcStat(ppid=11, own=0.25, reaped=0.0),
        20: ProcStat(ppid=1, own=9.0, reaped=0.0),  # not in the tree
    }
    assert tree_cpu(stats, 10) == 3.75
    assert tree_cpu(stats, 99) == 0.0  # gone


def test_stat_lines_with_odd_command_names_parse() -> None:
    fields = ["S", "7"] + ["0"] * 9 + ["300", "100", "50", "50"] + ["0"] * 5
    raw = "123 (postgres: a) b) " + " ".join(fields)
    assert parse_stat(raw, 100) == ProcStat(ppid=7, own=4.0, reaped=1.0)


def test_the_cases_table_shows_both_sides_and_their_ratio() -> None:
    lines = cases_table(
        [
            CaseRow("single sends", "msg/s", 250.0, 500.0),
            CaseRow("SendBatch of 1000", "recipients/s", None, 500.0, "SendBatch answered UNIMPLEMENTED"),
        ]
    )
    assert lines[0].startswith("| case | unit | Postwire | Postfix relay | ratio")
    assert lines[2] == "| single sends | msg/s | 250.0 | 500.0 | 0.50 |  |"
    assert (
        lines[3]
        == "| SendBatch of 1000 | recipients/s | n/a | 500.0 | n/a | SendBatch answered UNIMPLEMENTED |"
    )


def test_new_columns_go_to_the_right_of_the_classic_ones() -> None:
    from bench.__main__ import Deliveries, MachineCpu, Report, SendPhase

    report = Report(10, 2, SendPhase(), Deliveries(), {}, 0.0, MachineCpu(0, 0, 0))
    header = results_table(report, [("Postfix delivered/s", "500.0"), ("ratio", "0.50")])[0]
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:2] == ["messages", "concurrency"]
    assert cells[-2:] == ["Postfix delivered/s", "ratio"]
    assert results_table(report)[0].count("|") == header.count("|") - 2


def test_case_rows_compare_batch_with_postfix_single_sends_and_latencies_in_ms() -> None:
    rows = case_rows(
        64,
        1000,
        Rates(single=300.0, batch=None, postfix=500.0),
        Latencies(
            postwire_idle=[0.010, 0.020, 0.030],
            postfix_idle=[0.009],
            postwire_half=[],
            postfix_half=[0.1, 0.2],
            postwire_half_accept=[0.005],
        ),
        postfix_note="",
        batch_note="SendBatch answered UNIMPLEMENTED",
    )
    by_case = {row.case: row for row in rows}
    assert by_case["single sends, 64 in flight, delivered"] == CaseRow(
        "single sends, 64 in flight, delivered", "msg/s", 300.0, 500.0
    )
    batch = by_case["SendBatch of 1000, delivered"]
    assert (batch.postwire, batch.postfix, batch.note) == (None, 500.0, "SendBatch answered UNIMPLEMENTED")
    idle = by_case["idle, 1 in flight, send→sink p50"]
    assert idle.postwire == pytest.approx(20.0) and idle.postfix == pytest.approx(9.0)
    half = by_case["half of max rate, send→sink p99"]
    assert half.postwire is None and half.postfix == pytest.approx(199.0)
    assert by_case["half of max rate, SendEmail accept p99"].postfix is None
