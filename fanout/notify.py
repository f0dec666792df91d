"""Notifications when a rollout needs a person: `--notify URL` (repeatable), `--notify-format`.

A subscriber of the run's event stream: on a wave done, a halt (error budget, daily quota, fatal
API error, stop) and the end of the run it POSTs one JSON message to every URL, shaped for a
DingTalk robot (`dingtalk`), a Slack webhook (`slack`) or as fanout's own event (`json`), with
the counts by state and the path of the HTML report. Messages go out in order on one thread, so
the run never waits on a webhook; a failed POST is retried a few times, then logged and dropped:
a notification never changes how a run goes or its exit code.

Webhook URLs carry their credentials (DingTalk's access_token, Slack's path), so they are
secrets: registered for redaction, and logs name only the scheme and host. A message holds run
ids, states, counts and a path, nothing from parameters; it is redacted all the same.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from fanout.errors import ConfigError
from fanout.logs import redact, register_secret
from fanout.run_totals import RunTotals

__all__ = ["NOTIFY_FORMATS", "Notification", "Notifier", "check_url", "message_body", "safe_url"]

NOTIFY_FORMATS = ("json", "dingtalk", "slack")
# A webhook answers in well under a second; a few tries over a few seconds ride out a blip
# without holding the end of a run for long.
ATTEMPTS = 3
TIMEOUT_S = 5.0
RETRY_DELAY_S = 0.5
_HALT_STATES = {"halted": "budget", "quota": "quota", "fatal": "fatal", "stopped": "stop"}

log = structlog.get_logger("fanout.notify")
Post = Callable[[str, bytes], int]


@dataclass(frozen=True, slots=True)
class Notification:
    """One message: what happened to which run, with the counts at that moment."""

    event: str  # wave_done | halted | finished
    run_id: str
    instances: Mapping[str, int]
    report: str | None
    wave: int | None = None
    waves: int | None = None
    reason: str | None = None  # halted: budget | quota | fatal | stop
    state: str | None = None
    exit_code: int | None = None
    failures: int | None = None
    allowed: int | None = None
    until: str | None = None  # quota: when capacity frees

    def as_dict(self) -> dict[str, Any]:
        """fanout's own JSON shape (`--notify-format json`): the fields that are set."""
        fields = {
            "event": self.event,
            "run_id": self.run_id,
            "wave": self.wave,
            "waves": self.waves,
            "reason": self.reason,
            "state": self.state,
            "exit_code": self.exit_code,
            "failures": self.failures,
            "allowed": self.allowed,
            "until": self.until,
            "instances": dict(self.instances),
            "report": self.report,
        }
        return {k: v for k, v in fields.items() if v is not None} | {"text": self.text()}

    def title(self) -> str:
        """One line: what happened."""
        if self.event == "wave_done":
            return f"fanout {self.run_id}: wave {self.wave} of {self.waves} done"
        if self.event == "halted":
            why = {
                "budget": f"error budget exceeded ({self.failures} > {self.allowed} allowed)",
                "quota": "daily quota spent"
                + (f", capacity frees at {self.until}" if self.until else ""),
                "fatal": "fatal API error",
                "stop": "stopped by `fanout stop`",
            }.get(self.reason or "", self.reason or "halted")
            return f"fanout {self.run_id} halted: {why}"
        return f"fanout {self.run_id} {self.state} (exit {self.exit_code})"

    def text(self) -> str:
        """The title, the counts and the report path, as a few lines of plain text."""
        counts = ", ".join(f"{n} {s}" for s, n in self.instances.items() if n) or "no instances"
        lines = [self.title(), f"instances: {counts}"]
        if self.report:
            lines.append(f"report: {self.report}")
        return redact("\n".join(lines))


def message_body(note: Notification, fmt: str) -> bytes:
    """The POST body for one URL in `fmt` (json, dingtalk, slack)."""
    if fmt == "dingtalk":
        lines = note.text().splitlines()
        text = "\n\n".join([f"### {lines[0]}", *(f"- {line}" for line in lines[1:])])
        doc: dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": lines[0], "text": text}}
    elif fmt == "slack":
        doc = {
            "text": note.text(),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": note.text()}}],
        }
    else:
        doc = note.as_dict()
    return json.dumps(doc).encode()


def check_url(url: str) -> str:
    """A webhook URL, refused (exit 2) unless http(s) with a host; registered as a secret."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"--notify {safe_url(url)}: expected an http:// or https:// URL"
        raise ConfigError(msg)
    register_secret(url)
    for secret in (parts.path, parts.query):
        if len(secret) > 8:  # a token in the path (Slack) or the query (DingTalk)
            register_secret(secret)
    return url


def safe_url(url: str) -> str:
    """How logs name a webhook: scheme and host only (the rest carries its token)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…" if parts.scheme else "…"


def _post(url: str, body: bytes) -> int:
    """POST `body` as JSON; the HTTP status (an error status raises HTTPError)."""
    # S310: the URL is http(s), checked by check_url when the notifier was made.
    request = urllib.request.Request(  # noqa: S310
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
        return int(response.status)


class Notifier:
    """Run events in; messages out to every URL, in order, on one background thread."""

    __slots__ = (
        "_fmt",
        "_notified",
        "_post",
        "_queue",
        "_report",
        "_thread",
        "_totals",
        "_urls",
        "delay_s",
        "sent",
    )

    def __init__(
        self,
        urls: Sequence[str],
        fmt: str = "json",
        *,
        report: str | None = None,
        totals: RunTotals | None = None,
        post: Post = _post,
        delay_s: float = RETRY_DELAY_S,
    ) -> None:
        self._urls = tuple(check_url(u) for u in urls)
        self._fmt = fmt
        self._report = report
        self._totals = totals or RunTotals()
        self._post = post
        self.delay_s = delay_s
        self._notified: set[str] = set()  # halt reasons already told
        self._queue: queue.Queue[Notification | None] = queue.Queue()
        self._thread = threading.Thread(target=self._send_all, name="fanout-notify", daemon=True)
        self._thread.start()
        self.sent: list[tuple[str, str]] = []  # (event, url) delivered, for tests and the end line

    def feed(self, kind: str, data: Mapping[str, Any]) -> None:
        """Take one run event; queue a message if it is one a person should hear about."""
        self._totals.feed(kind, data)
        for note in self._notes(kind, data):
            self._queue.put(note)

    def _notes(self, kind: str, data: Mapping[str, Any]) -> list[Notification]:
        """The messages one event makes (most make none)."""
        snap = self._totals.snapshot()
        base: dict[str, Any] = {
            "run_id": str(data.get("run_id", snap.run_id)),
            "instances": snap.instances,
            "report": self._report,
        }
        if kind == "wave":
            return [
                Notification(
                    "wave_done",
                    wave=int(data.get("wave", snap.wave)),
                    waves=snap.waves,
                    failures=snap.failures,
                    **base,
                )
            ]
        if kind == "halted":
            return self._halt("budget", base, failures=snap.failures, allowed=snap.allowed)
        if kind == "quota_wait":
            return self._halt("quota", base, until=str(data.get("until")))
        if kind != "end":
            return []
        notes = []
        reason = _HALT_STATES.get(str(data.get("state")))
        if reason is not None:
            notes += self._halt(reason, base)
        exit_code = data.get("exit_code")
        notes.append(
            Notification(
                "finished",
                state=str(data.get("state")),
                exit_code=exit_code if isinstance(exit_code, int) else None,
                failures=snap.failures,
                **base,
            )
        )
        return notes

    def _halt(self, reason: str, base: Mapping[str, Any], **extra: Any) -> list[Notification]:
        """A halt message, once per reason."""
        if reason in self._notified:
            return []
        self._notified.add(reason)
        return [Notification("halted", reason=reason, **base, **extra)]

    def _send_all(self) -> None:
        """The sender thread: every message to every URL, in order."""
        while (note := self._queue.get()) is not None:
            for url in self._urls:
                self._deliver(url, note)

    def _deliver(self, url: str, note: Notification) -> None:
        """POST one message, a few times if need be; log (never raise) when it cannot go."""
        body = message_body(note, self._fmt)
        error = ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._post(url, body)
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:  # refused, reset, timeout, bad answer
                error = type(exc).__name__
            else:
                self.sent.append((note.event, url))
                return
            if attempt < ATTEMPTS:
                time.sleep(self.delay_s * attempt)
        log.warning(
            "notify_failed",
            target=safe_url(url),
            notification=note.event,
            error=error,
            attempts=ATTEMPTS,
        )

    def close(self, timeout_s: float = ATTEMPTS * (TIMEOUT_S + RETRY_DELAY_S * ATTEMPTS)) -> None:
        """Send what is queued (waiting at most `timeout_s`), then stop."""
        self._queue.put(None)
        self._thread.join(timeout_s)
