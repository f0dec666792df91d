"""The HTML report as a pure function of ledger records (issue 17): what it counts, groups and
draws, that untrusted text stays text, and that the page asks nothing of the network."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fanout.failures import group_failures, normalise_tail
from fanout.html_report import RunLedger, render_html, report_model
from fanout.ledger import (
    AppendEvent,
    BatchRecord,
    BatchState,
    BeginAttempt,
    FinishAttempt,
    InstanceState,
    RunRecord,
    RunState,
    SetBatch,
)
from fanout.ledger.sqlite import SqliteLedger
from tests.report_fixtures import T0, synthetic_retry, synthetic_run

NOW = T0 + 3600


def _data_block(html: str) -> dict[str, object]:
    """The page's JSON block of table rows."""
    match = re.search(
        r'<script type="application/json" id="fanout-data">(.*?)</script>', html, re.S
    )
    assert match is not None
    data: dict[str, object] = json.loads(match.group(1))
    return data


def test_counts_add_up_to_the_targets_and_match_the_rows() -> None:
    """The summary, the breakdowns and the table each count every target exactly once."""
    run = synthetic_run(2000)
    model = report_model(run, generated_at=NOW)
    assert sum(model["summary"].values()) == run.run.target_count == len(model["table"]["rows"])
    for key in ("by_region", "by_wave"):
        assert sum(sum(c.values()) for _, c in model[key]) == run.run.target_count
    states = model["table"]["dicts"]["state"]
    from_rows: dict[str, int] = {}
    for row in model["table"]["rows"]:
        from_rows[states[row[2]]] = from_rows.get(states[row[2]], 0) + 1
    assert from_rows == {s: n for s, n in model["summary"].items() if n}
    # A halted run's never-sent instances are reported not_invoked, not pending.
    assert model["summary"]["not_invoked"] > 0
    assert "pending" not in from_rows


def test_waves_are_numbered_from_one() -> None:
    """Waves in the breakdown, the table and the timeline count from 1, as the events do."""
    model = report_model(synthetic_run(900), generated_at=NOW)
    names = [name for name, _ in model["by_wave"]]
    assert names == ["not batched (excluded)", "wave 1", "wave 2", "wave 3"]
    waves = {row[3] for row in model["table"]["rows"]}
    assert waves == {None, 1, 2, 3}
    assert {m.wave for m in model["timeline"].marks} == {1, 2, 3}


def test_failure_groups_add_up_to_the_failed_instances_largest_first() -> None:
    """Every failed instance is in exactly one group; the groups come largest first."""
    model = report_model(synthetic_run(3000), generated_at=NOW)
    groups = model["failure_groups"]
    counts = [g["count"] for g in groups]
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) == model["failed_total"] == model["summary"]["failed"]
    # Three distinct tails (exit codes differ) plus the no-output ClientNotRunning group.
    assert len(groups) == 4
    assert any(g["key"].startswith("(no output) ClientNotRunning") for g in groups)
    in_rows = [row[10] for row in model["table"]["rows"] if row[10] is not None]
    assert len(in_rows) == model["failed_total"]


@pytest.mark.parametrize(
    ("output", "tail"),
    [
        (None, ""),
        ("", ""),
        ("ok\n\n", "ok"),
        ("a\nb\nc\nd\ne\nf\ng\n", "c\nd\ne\nf\ng"),
        ("hello from i-bp1abcdef0123456789\nerror 3", "hello from <instance>\nerror 3"),
        ("at 2026-11-28T06:35:12Z from 10.0.3.17", "at <time> from <ip>"),
        ("request 6f1c2a7e-1b2c-4d5e-8f90-123456789abc", "request <id>"),
        ("pid 123456 took  12 ms", "pid <n> took 12 ms"),
    ],
)
def test_normalised_tails_mask_what_differs_between_hosts(output: str | None, tail: str) -> None:
    """The last five non-blank lines, with ids, addresses, times and long numbers masked."""
    assert normalise_tail(output) == tail


def test_groups_of_hosts_failing_the_same_way_are_one_group() -> None:
    """Two hosts that print the same error with their own id and time fall into one group."""
    run = synthetic_run(300)
    base = next(r for r in run.instances if r.state is InstanceState.FAILED and r.output)
    one = replace(base, instance_id="i-aaaaaaaaaaaa", output="i-aaaaaaaaaaaa at 12:00:01: boom")
    two = replace(base, instance_id="i-bbbbbbbbbbbb", output="i-bbbbbbbbbbbb at 13:14:15: boom")
    other = replace(base, instance_id="i-cccccccccccc", output="something else")
    groups = group_failures([one, two, other])
    assert [g.count for g in groups] == [2, 1]
    assert groups[0].key == "<instance> at <time>: boom"


def test_timeline_has_one_mark_per_sent_batch_and_marks_the_halt() -> None:
    """Each sent batch is one mark in its run's region lane; never-sent batches are counted."""
    original = synthetic_run(3000)
    retry = synthetic_retry(original)
    timeline = report_model(original, [retry], generated_at=NOW)["timeline"]
    sent = len(original.times) + len(retry.times)
    assert len(timeline.marks) == sent
    assert len({m.batch_id for m in timeline.marks}) == sent
    assert timeline.unsent == len(original.batches) - len(original.times) > 0
    assert [lane.label for lane in timeline.lanes][3:] == [
        "retry 1 · cn-beijing",
        "retry 1 · cn-hangzhou",
        "retry 1 · cn-shanghai",
    ]
    assert {m.kind for m in timeline.markers} == {"halt", "end"}
    assert all(0 <= m.x <= 1000 and m.x + m.width <= 1001.3 for m in timeline.marks)
    assert [b.label for b in timeline.bands if b.kind == "wave"] == [
        "wave 1",
        "wave 2",
        "wave 3",
        "retry 1 wave 1",
    ]


def test_quota_waits_between_legs_are_bands() -> None:
    """A leg that ended on the quota and a later resume draw one quota band between them."""
    run = synthetic_run(600)
    last = run.events[-1][1]
    events = (
        *run.events[:-2],
        (8, last - 100, "end", {"state": "quota", "exit_code": 4}),
        (9, last - 50, "start", {"owner": "ops-host:5"}),
        (10, last, "end", {"state": "finished", "exit_code": 1}),
    )
    timeline = report_model(replace(run, events=events), generated_at=NOW)["timeline"]
    (band,) = [b for b in timeline.bands if b.kind == "quota"]
    assert band.width > 0
    assert {m.kind for m in timeline.markers} == {"end", "start"}


def test_retries_roll_up_with_the_original() -> None:
    """An instance retried shows its latest attempt and says which run produced it."""
    original = synthetic_run(3000)
    retry = synthetic_retry(original)
    model = report_model(original, [retry], generated_at=NOW)
    assert [r["label"] for r in model["runs"]] == ["run", "retry 1"]
    assert model["runs"][1]["parent_run_id"] == original.run.run_id
    runs = model["table"]["dicts"]["run"]
    produced = {runs[row[9]] for row in model["table"]["rows"]}
    assert produced == {"run", "retry 1"}
    before = report_model(original, generated_at=NOW)["summary"]["failed"]
    assert model["summary"]["failed"] < before
    assert sum(model["summary"].values()) == original.run.target_count


def test_untrusted_text_is_escaped_and_the_page_loads_nothing() -> None:
    """`<script>` in an instance name or output is text; no URL in the page; the one script is
    allowed by its hash in the Content-Security-Policy."""
    run = synthetic_run(300)
    evil = "<script>alert(1)</script>"
    rows = list(run.instances)
    index = next(i for i, r in enumerate(rows) if r.state is InstanceState.FAILED and r.output)
    rows[index] = replace(rows[index], instance_id=f"i-x{evil}", output=f"{evil}\n</pre><b>x")
    batches = [replace(b, region=b.region) for b in run.batches]
    run = replace(
        run,
        instances=tuple(rows),
        batches=tuple(batches),
        run=replace(run.run, parameters={"note": evil}),
    )
    html = render_html(report_model(run, generated_at=NOW))
    assert evil not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # in the header and the group
    assert "\\u003cscript\\u003ealert(1)" in html  # in the JSON block
    assert html.count("<script") == 2  # the JSON block and our own script
    data = _data_block(html)
    assert any(evil in str(row) for row in data["rows"])  # type: ignore[attr-defined]
    assert not re.search(r"(https?:)?//[a-z0-9]", html.replace("http-equiv", ""), re.I)
    assert not re.search(r"""\b(src|href)=["'](?!#)""", html)
    csp = re.search(r"script-src ('sha256-[^']+')", html)
    assert csp is not None
    assert "default-src 'none'" in html


def test_model_is_json_free_of_secrets_the_ledger_redacted() -> None:
    """Secret parameter values are shown as the ledger stored them: redacted."""
    html = render_html(report_model(synthetic_run(100), generated_at=NOW))
    assert "token=***" in html
    assert "(secret)" in html


def test_batch_times_come_from_the_attempts_and_the_final_state(tmp_path: Path) -> None:
    """`batch_times`: first send, acceptance and the final state's time; unsent batches absent."""
    store = SqliteLedger(tmp_path / "l.sqlite3")
    run = RunRecord("r1", T0, T0, RunState.CREATED, "c-1", "acct", 100)
    batches = [
        BatchRecord(
            f"b{i}", "r1", "cn-beijing", i, 0, (f"i-{i:012x}",), f"tok{i}", BatchState.PENDING
        )
        for i in range(3)
    ]
    store.create_run(run, batches)

    def attempt(batch: str, n: int, at: float) -> BeginAttempt:
        return BeginAttempt("r1", batch, "cn-beijing", n, f"tok{batch}", "acct", 0.0, 100, at)

    store.apply(
        [
            attempt("b0", 1, T0 + 1),
            FinishAttempt("b0", 1, "retryable", T0 + 2),
            attempt("b0", 2, T0 + 3),
            FinishAttempt("b0", 2, "accepted", T0 + 4, invoke_id="t-1"),
            SetBatch("b0", BatchState.ACCEPTED, T0 + 4, invoke_id="t-1"),
            SetBatch("b0", BatchState.DONE, T0 + 30),
            attempt("b1", 1, T0 + 5),
            FinishAttempt("b1", 1, "accepted", T0 + 6, invoke_id="t-2"),
            SetBatch("b1", BatchState.ACCEPTED, T0 + 6, invoke_id="t-2"),
            AppendEvent("r1", "wave", T0 + 7, {"wave": 1}),
        ]
    )
    times = store.batch_times("r1")
    assert set(times) == {"b0", "b1"}
    assert (times["b0"].sent_at, times["b0"].accepted_at, times["b0"].ended_at) == (
        T0 + 1,
        T0 + 4,
        T0 + 30,
    )
    assert (times["b1"].accepted_at, times["b1"].ended_at) == (T0 + 6, None)
    store.close()


def test_a_run_that_sent_nothing_still_renders() -> None:
    """Every target excluded: no timeline marks, a page all the same."""
    run = synthetic_run(100)
    only_excluded = RunLedger(
        run.run,
        (),
        {},
        run.events[:1],
        tuple(r for r in run.instances if r.state is InstanceState.EXCLUDED),
    )
    html = render_html(report_model(only_excluded, generated_at=NOW))
    assert 'class="batch-mark' not in html
    assert "No instance failed." in html


def test_stored_options_read_as_words_not_python() -> None:
    """A script run's stored source and spec read as `key value` pairs, yes/no and the script's
    size and digest - never a Python dict, `True` or the script's text (new-user trial)."""
    run = synthetic_run(50)
    script = "#!/bin/sh\necho deploy\nexit 0\n"
    options = {
        **run.run.options,
        "source": {"kind": "script", "content": script, "command_type": "RunShellScript"},
        "spec": {"had_parameters": True, "timeout_s": 60.0, "username": None},
        "strict": False,
        "waves": "1,10%,100%",
    }
    run = replace(run, run=replace(run.run, options=options))
    html = render_html(report_model(run, generated_at=NOW))
    header = html[html.index('<table class="kv">') : html.index('id="summary"')]
    assert "{&#39;" not in header
    assert "{'" not in header
    assert "True" not in header
    assert "False" not in header
    assert "echo deploy" not in header
    assert "kind script; content 3 lines, 29 bytes, sha256 " in header
    assert '<th>parameters given</th><td class="mono">yes</td>' in header
    assert '<th>timeout_s</th><td class="mono">60</td>' in header
    assert '<th>strict</th><td class="mono">no</td>' in header


def test_rollbacks_and_wave_checks_are_a_section_of_their_own() -> None:
    """The linked runs (report_io.linked_sections) get their own table, escaped, and change
    none of the run's own rows or counts."""
    original = synthetic_run(300)
    plain = report_model(original, generated_at=NOW)
    linked: list[dict[str, Any]] = [
        {"run_id": "r-check", "kind": "wave_check", "wave": 1, "state": "finished", "exit_code": 1,
         "command_id": "<b>check</b>", "target_count": 20, "summary": {"succeeded": 17, "excluded": 3}},
        {"run_id": "r-undo", "kind": "rollback", "wave": None, "state": "finished", "exit_code": 0,
         "command_id": "undo", "target_count": 5, "summary": {"succeeded": 5}},
    ]  # fmt: skip
    model = report_model(original, generated_at=NOW, linked=linked)
    assert model["summary"] == plain["summary"]
    assert model["table"] == plain["table"]
    assert [(r["what"], r["counts"]) for r in model["linked"]] == [
        ("wave 1 check", "17 succeeded, 3 excluded"),
        ("rollback", "5 succeeded"),
    ]
    html = render_html(model)
    assert "<h2>Rollbacks and wave checks</h2>" in html
    assert "r-undo" in html
    assert "&lt;b&gt;check&lt;/b&gt;" in html
    assert "Rollbacks and wave checks" not in render_html(plain)
