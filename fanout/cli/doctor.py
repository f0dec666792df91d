"""`fanout doctor`: the first command to run on a new account - one read-only call per action
fanout needs, per region, and what is missing."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from fanout import eventloop
from fanout.aliyun.keys import account_key
from fanout.aliyun.permissions import policy_document
from fanout.cli.exits import guarded
from fanout.cli.options import CommonFlags, common_options, credentials_for, settings_from
from fanout.cli.views import Out
from fanout.doctor import DRY_RUN_COST, RegionReport, check_regions
from fanout.errors import CallError, ConfigError, CredentialsError, ExitCode
from fanout.report import iso
from fanout.runner import client_for

__all__ = ["doctor_command"]


@click.command("doctor")
@click.option("--region", "regions", multiple=True, help="Region to check (repeatable).")
@click.option(
    "--check-invoke",
    is_flag=True,
    help="Also check InvokeCommand (a DryRun), StopInvocation, CreateCommand and DeleteCommand "
    "(of nothing).",
)
@click.option("--command-id", help="--check-invoke: the command to dry-run (default: one found).")
@click.option(
    "--instance-id", help="--check-invoke: the instance to dry-run on (default: one found)."
)
@click.option("--endpoint", help="API endpoint URL for every region (e.g. the emulator).")
@click.option("--profile", help="Credentials profile (aliyun CLI / credentials.ini).")
@click.option("--ca-bundle", type=click.Path(dir_okay=False), help="Extra trusted CA (PEM).")
@common_options
@guarded
def doctor_command(
    regions: tuple[str, ...],
    check_invoke: bool,
    command_id: str | None,
    instance_id: str | None,
    endpoint: str | None,
    profile: str | None,
    ca_bundle: str | None,
    common: CommonFlags,
) -> None:
    """Check credentials, RAM permissions and quota: one call per action fanout needs.

    Per region: OK or the missing RAM permission for each action, the account's daily
    invocation quota, the endpoint used; and where the credentials come from and when they
    expire. Exit 0 when everything passed, 6 when a check failed. `--json` prints the RAM
    policy fanout needs as `policy`.

    \b
    fanout doctor --region cn-hangzhou --region cn-beijing
    fanout doctor --region cn-hangzhou --check-invoke
    """
    settings = settings_from(
        common.config_file, endpoint=endpoint, profile=profile, ca_bundle=ca_bundle
    )
    chosen = tuple(dict.fromkeys(regions)) or ((settings.region,) if settings.region else ())
    if not chosen:
        raise ConfigError("--region: name at least one region to check (or set region)")
    credentials = credentials_for(settings)
    if check_invoke:
        click.echo(f"fanout doctor: {DRY_RUN_COST}", err=True)

    async def run() -> tuple[dict[str, Any], list[RegionReport]]:
        async with client_for(settings, credentials) as client:
            found: dict[str, Any] = {"source": client.credentials_provider.source}
            try:
                creds = await client.credentials()
            except (CallError, CredentialsError) as err:
                return {**found, "error": str(err)}, []
            found.update(
                source=creds.source or found["source"],
                access_key_id=creds.access_key_id,
                sts=creds.is_sts,
                expires_at=iso(creds.expiration),
                renewable=client.credentials_provider.renewable,
            )
            reports = await check_regions(
                client,
                chosen,
                network=settings.network,
                endpoint=settings.endpoint,
                check_invoke=check_invoke,
                command_id=command_id,
                instance_id=instance_id,
            )
            return found, reports

    creds_doc, reports = eventloop.run(run)
    ok = "error" not in creds_doc and bool(reports) and all(r.ok for r in reports)
    doc = {
        "ok": ok,
        "account": settings.account or account_key(credentials),
        "credentials": creds_doc,
        "regions": {
            r.region: {
                "endpoint": r.endpoint,
                "daily_quota": r.daily_quota,
                "ok": r.ok,
                "checks": {c.action: c.document() for c in r.checks},
            }
            for r in reports
        },
        "policy": policy_document(),
    }
    Out(as_json=common.as_json).document(doc, doctor_text(doc, time.time()))
    sys.exit(int(ExitCode.OK if ok else ExitCode.FATAL_API))


def _expiry(creds: Mapping[str, Any], now: float) -> str:
    """When the credentials expire, in words."""
    expires = creds.get("expires_at")
    if not expires:
        return "no expiry (an access key)"
    renew = "renewed automatically before then" if creds.get("renewable") else "not renewable"
    return f"expire {expires} ({renew})"


def doctor_text(doc: Mapping[str, Any], now: float) -> str:
    """The doctor's document for people: credentials, then per region each action."""
    creds = doc["credentials"]
    lines = [f"credentials: {creds['source']}"]
    if "error" in creds:
        lines.append(f"  FAILED: {creds['error']}")
    else:
        lines.append(f"  key {creds['access_key_id']}, {_expiry(creds, now)}")
    lines.append(f"quota account: {doc['account']}")
    for region, data in doc["regions"].items():
        quota = data["daily_quota"]
        lines.append(
            f"{region}: endpoint {data['endpoint']}; daily invocation quota "
            f"{quota if quota is not None else 'unknown'}"
        )
        for action, check in data["checks"].items():
            mark = (
                "OK     "
                if check["ok"]
                else ("MISSING" if check["missing_permission"] else "FAILED ")
            )
            detail = "" if check["detail"] == "OK" else f": {check['detail']}"
            lines.append(f"  {mark} {action} ({check['permission']}){detail}")
    lines.append("all checks passed" if doc["ok"] else "some checks failed (exit 6)")
    return "\n".join(lines)
