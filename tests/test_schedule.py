"""`fanout.schedule`: every Frequency form, the 10-second rule on the real schedule, and agreement
with the emulator's own, independent parser (sent through the emulator with EcsClient)."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import pytest

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.credentials import Credentials
from fanout.emulator import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    EmulatorConfig,
    running_emulator,
)
from fanout.errors import ApiError
from fanout.schedule import MIN_INTERVAL_S, FrequencyError, parse

# A fixed "now" for the pure tests: 2026-03-01 00:00:00 UTC.
NOW_S = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


def refused(text: str, now_s: float = NOW_S) -> str | None:
    """Why `text` is refused, or None when it is accepted."""
    try:
        parse(text, now_s)
    except FrequencyError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("rate(60s)", "rate"),
        ("rate(5m)", "rate"),
        ("rate(7d)", "rate"),
        ("at(2026-12-01 08:00:00)", "at"),
        ("at(2026-12-01 08:00:00 Asia/Shanghai)", "at"),
        ("at(2026-12-01 08:00:00 GMT+8:00)", "at"),
        ("0 */20 * * * *", "cron"),
        ("0 0 12 * * ?", "cron"),
        ("0 15 10 ? * MON-FRI", "cron"),
        ("0 0 12 * * ? 2030", "cron"),
        ("0 0 12 * * ? 2030 Asia/Shanghai", "cron"),
        ("0 0 12 * * ? GMT-7:00", "cron"),
        ("0 15 10 L * ?", "cron"),
        ("0 15 10 LW * ?", "cron"),
        ("0 15 10 15W * ?", "cron"),
        ("0 15 10 ? * 5L", "cron"),
        ("0 15 10 ? * FRI#3", "cron"),
        ("08 0 12 * * ?", "cron"),
        ("  0 0 12 * * ?  ", "cron"),
    ],
)
def test_every_form_the_api_takes_is_accepted(text: str, kind: str) -> None:
    """rate(), at() and six/seven-field cron with a time zone are accepted and told apart."""
    assert parse(text, NOW_S).kind == kind


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("*/5 * * * * *", "5 s apart"),
        ("0,9 * * * * *", "9 s apart"),
        ("0,58 0,59 0,23 * * *", "2 s apart"),  # 23:59:58 then 00:00:00 the next day
        ("* * * * * *", "1 s apart"),
        ("55,0 59,0 1,3 * * ? America/New_York", "daylight-saving"),  # 01:59:55 -> 03:00:00
    ],
)
def test_runs_closer_than_10_s_are_refused_on_the_real_schedule(text: str, problem: str) -> None:
    """Spec S7: two runs under 10 s apart are refused, within a minute, overnight or at a DST change."""
    why = refused(text)
    assert why is not None
    assert problem in why


@pytest.mark.parametrize(
    "text",
    [
        "*/10 * * * * *",  # exactly 10 s apart
        "0,50 59 23 * * *",  # 23:59:50 and 23:59:00: the overnight gap is 23 h 59 min
        "0,58 0,59 0,23 1 * ?",  # the close pair spans midnight only between two run days
        "55,0 59,0 1,3 * * ? Asia/Shanghai",  # no daylight saving: an hour apart
    ],
)
def test_runs_10_s_or_more_apart_are_fine(text: str) -> None:
    """A schedule whose closest runs are >= 10 s apart is accepted, and says so."""
    frequency = parse(text, NOW_S)
    assert frequency.min_interval_s is not None
    assert frequency.min_interval_s >= MIN_INTERVAL_S


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rate(59s)", "60 seconds to 7 days"),
        ("rate(8d)", "60 seconds to 7 days"),
        ("rate(5)", "whole number"),
        ("at(2026-02-30 08:00:00)", "no real date"),
        ("at(2026-1-1 08:00:00)", "yyyy-MM-dd"),
        ("at(2020-01-01 00:00:00)", "in the past"),
        ("0 0 12 * *", "6 fields"),
        ("0 0 12 * * ? 2030 UTC extra", "6 fields"),
        ("60 0 12 * * ?", "second 60"),
        ("0 0 12 ? * 0", "day-of-week 0"),
        ("0 0 12 ? * L", "not a number"),
        ("? 0 12 * * *", "only allowed in the day fields"),
        ("000 0 12 * * ?", "leading zero"),
        ("0 0 12 5-1 * ?", "backwards"),
        ("*/0 * * * * *", "step 0"),
        ("0 0 12 30 2 ?", "matches no date"),  # 30 February
        ("0 0 12 * * ? 2020", "matches no date"),
        ("0 0 12 * * ? Mars/Olympus", "unknown time zone"),
        ("0 0 12 * * ? GMT+15", "out of range"),
    ],
)
def test_malformed_or_never_running_schedules_are_refused(text: str, problem: str) -> None:
    """Each malformed Frequency is refused with a message naming what is wrong."""
    why = refused(text)
    assert why is not None
    assert problem in why


def test_next_run_and_interval_are_reported() -> None:
    """A valid cron tells when it next runs and how far apart its runs are."""
    frequency = parse("0 */20 * * * *", NOW_S)
    assert frequency.next_run_s == NOW_S + 20 * 60
    assert frequency.min_interval_s == 20 * 60
    assert parse("rate(5m)", NOW_S).min_interval_s == 300
    assert parse("at(2026-03-01 08:00:00 GMT+8:00)", NOW_S - 1).next_run_s == NOW_S


# The agreement corpus: every string here gets the same verdict from fanout.schedule and from the
# emulator's parser. Future years keep the at()/year cases valid for decades.
AGREEMENT_CORPUS = (
    "0 */20 * * * *",
    "*/10 * * * * *",
    "*/5 * * * * *",
    "0,5 * * * * *",
    "5,20 * * * * *",
    "0,58 0,59 0,23 * * *",
    "0 0 12 * * ?",
    "0 15 10 ? * *",
    "0 15 10 ? * 6L",
    "0 15 10 ? * 6#3",
    "0 15 10 L * ?",
    "0 15 10 LW * ?",
    "0 15 10 15W * ?",
    "0 0 12 ? * MON-FRI",
    "0 0 12 * JAN,MAR ?",
    "0 0/15 9-17 * * ?",
    "0 0 12 * * ? 2090",
    "0 0 12 * * ? 2090-2095",
    "0 0 12 * * ? 2090 Asia/Shanghai",
    "0 0 12 * * ? Asia/Shanghai",
    "0 0 12 * * ? GMT+8:00",
    "0 0 12 * * ? GMT-7:00",
    "0 0 12 * * ? Mars/Olympus",
    "0 0 12 * * ? GMT+15",
    "0 0 12 * *",
    "0 0 12 * * ? 2090 UTC extra",
    "60 0 12 * * ?",
    "0 60 12 * * ?",
    "0 0 24 * * ?",
    "0 0 12 32 * ?",
    "0 0 12 * 13 ?",
    "0 0 12 ? * 8",
    "0 0 12 ? * 0",
    "0 0 12 ? * L",
    "0 0 12 5-1 * ?",
    "0 0 12 ? * 1#6",
    "? * * * * *",
    "rate(5m)",
    "rate(60s)",
    "rate(59s)",
    "rate(7d)",
    "rate(8d)",
    "rate(10x)",
    "at(2090-01-01 00:00:00)",
    "at(2090-01-01 00:00:00 Asia/Shanghai)",
    "at(2090-02-30 00:00:00)",
    "at(2090-1-1 00:00:00)",
)


async def test_client_verdict_agrees_with_the_emulator() -> None:
    """Refused client-side exactly when the emulator answers InvalidParam.Frequency, for 47 strings."""
    config = EmulatorConfig(instances_per_region=1)
    credentials = Credentials(DEMO_ACCESS_KEY_ID, DEMO_ACCESS_KEY_SECRET, source="test")
    disagreements: list[str] = []
    async with running_emulator(config) as emu:
        options = ClientOptions(endpoint=emu.url, retry_base_delay_s=0.01)
        async with EcsClient(credentials, options) as client:
            (instance,) = await client.describe_instances("cn-hangzhou")
            for text in AGREEMENT_CORPUS:
                ours = refused(text, time.time())
                code = ""
                try:
                    await client.invoke_command(
                        "cn-hangzhou",
                        CommandSpec(DEMO_COMMAND_ID, timed=True, frequency=text),
                        [instance.instance_id],
                        client_token=secrets.token_hex(16),
                    )
                except ApiError as exc:
                    code = exc.code
                if code not in ("", "InvalidParam.Frequency") or (ours is not None) != bool(code):
                    disagreements.append(f"{text!r}: ours={ours!r} emulator={code or 'accepted'}")
    assert disagreements == []
    assert sum(refused(t, time.time()) is not None for t in AGREEMENT_CORPUS) >= 20
