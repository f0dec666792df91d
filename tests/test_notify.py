"""Notifications from the run's event stream (issue 17): which events make a message, in which
order and shape, and that a failing webhook is retried, logged without its URL, and harmless."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from fanout.errors import ConfigError
from fanout.notify import Notification, Notifier, check_url, message_body, safe_url
from tests.receiver import receiver

RUN = "r20261128-063512-a1b2c3"
REGIONS = {"cn-beijing": {"batches": 2, "instances": 100, "excluded": 0, "pending": 100}}
HALTED_RUN: list[tuple[str, dict[str, Any]]] = [
    ("run", {"run_id": RUN, "targets": 100, "batches": 2, "allowed": 1, "regions": REGIONS}),
    ("wave_start", {"run_id": RUN, "wave": 1, "waves": 2}),
    ("batch_start", {"batch_id": "b1", "region": "cn-beijing", "attempts": 0}),
    ("call", {"action": "InvokeCommand", "region": "cn-beijing", "error_code": None}),
    ("batch", {"run_id": RUN, "batch_id": "b1", "region": "cn-beijing", "wave": 1,
               "outcome": "accepted", "instances": 50, "failures": 0}),
    ("instance", {"region": "cn-beijing", "state": "succeeded", "failures": 0}),
    ("wave", {"run_id": RUN, "wave": 1, "failures": 0}),
    ("wave_start", {"run_id": RUN, "wave": 2, "waves": 2}),
    ("instance", {"region": "cn-beijing", "state": "failed", "failures": 2}),
    ("halted", {"run_id": RUN, "failures": 2, "allowed": 1}),
    ("wave", {"run_id": RUN, "wave": 2, "failures": 2}),
    ("end", {"run_id": RUN, "state": "halted", "exit_code": 3,
             "instances": {"succeeded": 49, "failed": 2, "not_invoked": 49}}),
]  # fmt: skip


def _notify(
    events: list[tuple[str, dict[str, Any]]], fmt: str, status: int = 200
) -> list[dict[str, Any]]:
    """Feed `events` to a notifier posting to a local receiver; what it received."""
    with receiver(status) as got:
        notifier = Notifier([got.url], fmt, report="/tmp/r.html", delay_s=0.01)
        for kind, data in events:
            notifier.feed(kind, data)
        notifier.close()
        return got.bodies()


def test_a_halted_run_sends_wave_halt_wave_finish_in_order() -> None:
    """Wave 1 done, the budget halt, wave 2 done, the end: four messages, in that order."""
    bodies = _notify(HALTED_RUN, "json")
    assert [(b["event"], b.get("wave"), b.get("reason")) for b in bodies] == [
        ("wave_done", 1, None),
        ("halted", None, "budget"),
        ("wave_done", 2, None),
        ("finished", None, None),
    ]
    assert bodies[1]["failures"] == 2
    assert bodies[1]["allowed"] == 1
    assert bodies[-1]["instances"] == {"succeeded": 49, "failed": 2, "not_invoked": 49,
                                       "pending": 0, "invoked": 0, "excluded": 0}  # fmt: skip
    assert all(b["report"] == "/tmp/r.html" and b["run_id"] == RUN for b in bodies)


@pytest.mark.parametrize(
    ("state", "reason"), [("quota", "quota"), ("fatal", "fatal"), ("stopped", "stop")]
)
def test_an_end_that_needs_a_person_is_a_halt_then_the_finish(state: str, reason: str) -> None:
    """Quota, fatal and stopped ends send a halt with the reason before the final message."""
    events = [HALTED_RUN[0], ("end", {"run_id": RUN, "state": state, "exit_code": 4})]
    bodies = _notify(events, "json")
    assert [(b["event"], b.get("reason")) for b in bodies] == [
        ("halted", reason),
        ("finished", None),
    ]


def test_a_quota_wait_is_told_once() -> None:
    """Waiting for quota is a halt (with when capacity frees), told once however long it lasts."""
    wait = (
        "quota_wait",
        {"run_id": RUN, "regions": ["cn-beijing"], "until": "2026-11-29T06:00:00Z"},
    )
    bodies = _notify([HALTED_RUN[0], wait, wait, ("end", {"run_id": RUN, "state": "quota", "exit_code": 4})], "json")  # fmt: skip
    assert [(b["event"], b.get("reason")) for b in bodies] == [
        ("halted", "quota"),
        ("finished", None),
    ]
    assert bodies[0]["until"] == "2026-11-29T06:00:00Z"


def test_dingtalk_and_slack_shapes() -> None:
    """DingTalk gets a markdown message; Slack a text with one mrkdwn section."""
    (ding,) = _notify([HALTED_RUN[0], HALTED_RUN[-1]], "dingtalk")[1:]
    assert ding["msgtype"] == "markdown"
    assert ding["markdown"]["title"] == f"fanout {RUN} halted (exit 3)"
    assert "- instances: 49 succeeded, 2 failed, 49 not_invoked" in ding["markdown"]["text"]
    (slack,) = _notify([HALTED_RUN[0], HALTED_RUN[-1]], "slack")[1:]
    assert slack["text"].startswith(f"fanout {RUN} halted (exit 3)")
    assert slack["blocks"][0]["text"]["type"] == "mrkdwn"
    assert "report: /tmp/r.html" in slack["blocks"][0]["text"]["text"]


def test_a_failing_webhook_is_retried_then_logged_without_its_url() -> None:
    """A receiver answering 500 gets each message three times; the log names only its host."""
    with capture_logs() as logs, receiver(500) as got:
        notifier = Notifier([got.url], "json", delay_s=0.01)
        notifier.feed(*HALTED_RUN[0])
        notifier.feed(*HALTED_RUN[-1])
        notifier.close()
        bodies = got.bodies()
    assert [b["event"] for b in bodies] == ["halted"] * 3 + ["finished"] * 3
    failures = [e for e in logs if e["event"] == "notify_failed"]
    assert [e["notification"] for e in failures] == ["halted", "finished"]
    assert failures[0]["error"] == "HTTP 500"
    assert failures[0]["target"] == "http://127.0.0.1/…"
    assert "t0psecret" not in json.dumps(logs)
    assert notifier.sent == []


def test_an_unreachable_webhook_does_not_raise() -> None:
    """Nothing listening: logged, and the notifier still closes."""
    with capture_logs() as logs:
        notifier = Notifier(["http://127.0.0.1:9/hook"], "slack", delay_s=0.01)
        notifier.feed(*HALTED_RUN[0])
        notifier.feed(*HALTED_RUN[-1])
        notifier.close()
    assert {e["event"] for e in logs} == {"notify_failed"}


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "hooks.slack.com", ""]
)
def test_only_http_urls_are_accepted(url: str) -> None:
    """A webhook is http(s) with a host; anything else is refused before the run."""
    with pytest.raises(ConfigError, match="--notify"):
        check_url(url)


def test_urls_are_secrets_and_logs_name_only_the_host() -> None:
    """`safe_url` keeps scheme and host; the whole URL and its token are registered secrets."""
    from fanout.logs import redact  # noqa: PLC0415

    url = "https://oapi.dingtalk.com/robot/send?access_token=abcdef0123456789"
    check_url(url)
    assert safe_url(url) == "https://oapi.dingtalk.com/…"
    assert "abcdef0123456789" not in redact(f"posting to {url} failed")


def test_message_bodies_hold_no_parameter_values() -> None:
    """A message is built from ids, states, counts and the report path only."""
    note = Notification("finished", RUN, {"succeeded": 3}, "/r.html", state="finished", exit_code=0)
    for fmt in ("json", "dingtalk", "slack"):
        body = json.loads(message_body(note, fmt))
        assert RUN in json.dumps(body)
    assert set(note.as_dict()) == {
        "event",
        "run_id",
        "state",
        "exit_code",
        "instances",
        "report",
        "text",
    }
