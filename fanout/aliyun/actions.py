"""The ECS actions fanout uses, as typed methods: parameters in, frozen values out.

`EcsActions` builds each action's parameters, follows NextToken paging and parses the answers;
it sends through one abstract method, `call_as`, which `fanout.aliyun.client.EcsClient`
implements over HTTP. The preflight's large answers are decoded straight from their bytes
(`fanout.aliyun.decoders`), with the generic parsers of `responses` as the fallback. Whether a call may be retried is the transport's business: `Describe*` calls are,
InvokeCommand, StopInvocation and CreateCommand are sent once per method call.
"""

from __future__ import annotations

import abc
import base64
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from contextlib import aclosing
from functools import partial
from typing import Any, TypedDict, TypeVar, Unpack

from fanout.aliyun import decoders, responses, wire
from fanout.aliyun.command import CommandSpec
from fanout.aliyun.responses import (
    AgentStatus,
    Command,
    Instance,
    InstanceResult,
    Invocation,
    InvokeResult,
    Page,
)

__all__ = [
    "INSTANCE_IDS_MAX",
    "PAGE_SIZE_MAX",
    "STATUS_IDS_MAX",
    "STOP_IDS_MAX",
    "EcsActions",
    "InvocationQuery",
]

T = TypeVar("T")
R = TypeVar("R")

# Per-call limits of the API (aliyun-api-facts.md sections 1.3, 2.1-2.6).
PAGE_SIZE_MAX = 50  # MaxResults of DescribeInvocation(Result)s, DescribeCloudAssistantStatus
INSTANCE_IDS_MAX = 100  # DescribeInstances' InstanceIds JSON array
# DescribeCloudAssistantStatus' InstanceId.N: up to 100 in the current API reference (issue 12;
# facts 2.4 had no documented max). The emulator enforces 100 (emulator/describe.py).
STATUS_IDS_MAX = 100
STOP_IDS_MAX = 50  # StopInvocation's InstanceId.N
# A server that keeps answering with new NextTokens must not keep us paging forever.
_MAX_PAGES = 10_000


class InvocationQuery(TypedDict, total=False):
    """DescribeInvocations' filters (server side) and what to keep of its answer (our side)."""

    invoke_id: str | None
    instance_id: str | None
    command_id: str | None
    invoke_status: str | None  # overall status: Running, Finished, Pending, ...
    include_output: bool  # default False
    max_results: int  # default PAGE_SIZE_MAX
    keep_invoke_ids: Collection[str] | None  # parse only these invocations
    keep_statuses: Collection[str] | None  # and only instances in these statuses
    keep_instances: Mapping[str, Collection[str]] | None  # and of these invocations, these


class EcsActions(abc.ABC):
    """Typed ECS actions over `call`."""

    @abc.abstractmethod
    async def call_as(
        self, action: str, region: str, params: Mapping[str, object], reader: wire.Reader[R]
    ) -> R:
        """Send `action` to `region` with `params` (RegionId added); the answer read by `reader`."""

    async def call(self, action: str, region: str, params: Mapping[str, object]) -> dict[str, Any]:
        """Send `action` to `region` with `params` (RegionId added); the parsed JSON answer."""
        return await self.call_as(action, region, params, wire.JSON_OBJECT)

    async def _collect(
        self,
        action: str,
        region: str,
        params: Mapping[str, object],
        reader: wire.Reader[Page[T]],
    ) -> list[T]:
        """Every item of a NextToken-paged listing."""
        return await _gather(self._pages(action, region, params, reader))

    async def _pages(
        self,
        action: str,
        region: str,
        params: Mapping[str, object],
        reader: wire.Reader[Page[T]],
    ) -> AsyncGenerator[list[T], None]:
        """The items of a NextToken-paged listing, a page at a time, as each one arrives."""
        token = ""
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            page_params = {**params, "NextToken": token or None}
            page = await self.call_as(action, region, page_params, reader)
            yield list(page.items)
            token = page.next_token
            if not token or token in seen:
                break
            seen.add(token)

    async def invoke_command(
        self,
        region: str,
        spec: CommandSpec,
        instance_ids: Sequence[str],
        *,
        client_token: str,
    ) -> InvokeResult:
        """InvokeCommand, sent once (never retried here: it costs quota)."""
        params = wire.invoke_command_params(region, spec, instance_ids, client_token=client_token)
        return responses.parse_invoke(await self.call("InvokeCommand", region, params))

    async def describe_invocation_results(
        self,
        region: str,
        *,
        invoke_id: str | None = None,
        instance_id: str | None = None,
        max_results: int = PAGE_SIZE_MAX,
        content_encoding: str = "PlainText",
    ) -> list[InstanceResult]:
        """Every per-instance result of an invocation (or of an instance), all pages."""
        params = {
            "InvokeId": invoke_id,
            "InstanceId": instance_id,
            "MaxResults": max_results,
            "ContentEncoding": content_encoding,
        }
        return await self._collect(
            "DescribeInvocationResults",
            region,
            params,
            wire.Reader(
                partial(responses.parse_invocation_results, encoding=content_encoding),
                partial(decoders.decode_invocation_results, encoding=content_encoding),
            ),
        )

    async def describe_invocations(
        self, region: str, **query: Unpack[InvocationQuery]
    ) -> list[Invocation]:
        """Invocations with their instances (output in plain text when asked for), all pages.

        `invoke_status` filters on the overall status (Running, Finished, Pending, ...) on the
        server; `keep_invoke_ids` / `keep_statuses` / `keep_instances` filter what is parsed, on
        our side.
        """
        return await _gather(self.invocation_pages(region, **query))

    def invocation_pages(
        self, region: str, **query: Unpack[InvocationQuery]
    ) -> AsyncGenerator[list[Invocation], None]:
        """`describe_invocations` a page at a time (use with `contextlib.aclosing`)."""
        params = {
            "InvokeId": query.get("invoke_id"),
            "InstanceId": query.get("instance_id"),
            "CommandId": query.get("command_id"),
            "InvokeStatus": query.get("invoke_status"),
            "IncludeOutput": query.get("include_output", False),
            "ContentEncoding": "PlainText",
            "MaxResults": query.get("max_results", PAGE_SIZE_MAX),
        }
        invoke_ids, statuses = query.get("keep_invoke_ids"), query.get("keep_statuses")
        instance_ids = query.get("keep_instances")
        return self._pages(
            "DescribeInvocations",
            region,
            params,
            wire.Reader(
                partial(
                    responses.parse_invocations,
                    invoke_ids=invoke_ids,
                    statuses=statuses,
                    instance_ids=instance_ids,
                ),
                partial(
                    decoders.decode_invocations,
                    invoke_ids=invoke_ids,
                    statuses=statuses,
                    instance_ids=instance_ids,
                ),
            ),
        )

    async def describe_instances(
        self,
        region: str,
        *,
        instance_ids: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        status: str | None = None,
        max_results: int = INSTANCE_IDS_MAX,
    ) -> list[Instance]:
        """Instances by id (any number: sent 100 at a time), tag or status, all pages."""
        base: dict[str, object] = {
            "Tag": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
            "Status": status,
            "MaxResults": max_results,
        }

        reader = wire.Reader(
            partial(responses.parse_instances, region=region),
            partial(decoders.decode_instances, region=region),
        )
        if instance_ids is None:
            return await self._collect("DescribeInstances", region, base, reader)
        found: list[Instance] = []
        for chunk in _chunks(instance_ids, INSTANCE_IDS_MAX):
            params = {**base, "InstanceIds": wire.compact_json(list(chunk))}
            found.extend(await self._collect("DescribeInstances", region, params, reader))
        return found

    async def describe_cloud_assistant_status(
        self, region: str, instance_ids: Sequence[str]
    ) -> list[AgentStatus]:
        """Whether each instance's Cloud Assistant agent is online."""
        found: list[AgentStatus] = []
        for chunk in _chunks(instance_ids, STATUS_IDS_MAX):
            params = {"InstanceId": list(chunk), "MaxResults": PAGE_SIZE_MAX}
            found.extend(
                await self._collect("DescribeCloudAssistantStatus", region, params, _STATUSES)
            )
        return found

    async def create_command(
        self,
        region: str,
        *,
        name: str,
        content: str,
        command_type: str = "RunShellScript",
        enable_parameter: bool = False,
        timeout_s: int = 60,
        working_dir: str | None = None,
        description: str | None = None,
    ) -> str:
        """CreateCommand with `content` as plain text (Base64-encoded here); the new CommandId.

        Sent once (never retried here): CreateCommand takes no ClientToken, so a repeat could
        create a second command. An unknown outcome is resolved by its name
        (`describe_commands(name=...)`), which is what `fanout.commands` does.
        """
        params = {
            "Name": name,
            "Type": command_type,
            "CommandContent": base64.b64encode(content.encode("utf-8")).decode("ascii"),
            "EnableParameter": enable_parameter,
            "Timeout": timeout_s,
            "WorkingDir": working_dir or None,
            "Description": description,
        }
        return responses.parse_command_id(await self.call("CreateCommand", region, params))

    async def delete_command(self, region: str, command_id: str) -> str:
        """DeleteCommand; the RequestId. Sent once."""
        body = await self.call("DeleteCommand", region, {"CommandId": command_id})
        return str(body.get("RequestId", ""))

    async def describe_commands(
        self,
        region: str,
        *,
        command_id: str | None = None,
        name: str | None = None,
        provider: str | None = None,
        command_type: str | None = None,
    ) -> list[Command]:
        """Commands (by id, name or type; all of the account's), content decoded, all pages.

        With `provider`, the public (common) commands of that provider instead (only the latest
        version of each); without it a name is exact (or a prefix ending in `*`), with it fuzzy.
        """
        params = {
            "CommandId": command_id,
            "Name": name,
            "Provider": provider,
            "Latest": True if provider else None,
            "Type": command_type,
            "MaxResults": PAGE_SIZE_MAX,
        }
        return await self._collect(
            "DescribeCommands", region, params, wire.Reader(responses.parse_commands)
        )

    async def count_commands(self, region: str) -> int:
        """How many commands the account keeps in `region` (DescribeCommands' TotalCount)."""
        body = await self.call("DescribeCommands", region, {"MaxResults": 1})
        total = body.get("TotalCount")
        return int(total) if isinstance(total, int | str) and str(total).isdigit() else 0

    async def stop_invocation(
        self, region: str, invoke_id: str, instance_ids: Sequence[str] | None = None
    ) -> str:
        """StopInvocation on the given instances (None: all), 50 per call; the last RequestId.

        An empty list stops nothing and sends nothing. Never retried here.
        """
        if instance_ids is None:
            body = await self.call("StopInvocation", region, {"InvokeId": invoke_id})
            return str(body.get("RequestId", ""))
        request_id = ""
        for chunk in _chunks(instance_ids, STOP_IDS_MAX):
            params = {"InvokeId": invoke_id, "InstanceId": list(chunk)}
            body = await self.call("StopInvocation", region, params)
            request_id = str(body.get("RequestId", ""))
        return request_id

    async def describe_account_attributes(
        self, region: str, names: Sequence[str]
    ) -> dict[str, list[str]]:
        """Account attributes (e.g. `max-axt-invocation-daily`) -> their values as text."""
        body = await self.call("DescribeAccountAttributes", region, {"AttributeName": list(names)})
        return responses.parse_account_attributes(body)


_STATUSES = wire.Reader(responses.parse_agent_statuses, decoders.decode_agent_statuses)


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """`items` in slices of at most `size` (none for an empty sequence)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _gather(pages: AsyncGenerator[list[T], None]) -> list[T]:
    """Every item of every page, the generator closed even if a call fails."""
    items: list[T] = []
    async with aclosing(pages):
        async for page in pages:
            items.extend(page)
    return items
