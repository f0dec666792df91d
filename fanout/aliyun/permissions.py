"""The ECS actions fanout calls, and the RAM policy that allows exactly those.

A RAM user or role that runs fanout needs `ecs:<Action>` for each (RAM's action names for ECS
are the API's own, prefixed `ecs:`: the API reference's "Authorization information" tables).
`fanout doctor` checks them one by one; the README shows `policy_document()`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "COMMAND_ACTIONS",
    "READ_ACTIONS",
    "SPEND_ACTIONS",
    "USED_ACTIONS",
    "policy_document",
    "ram_permission",
]

# Free, read-only: the quota (DescribeAccountAttributes), preflight (DescribeInstances,
# DescribeCloudAssistantStatus), the command check (DescribeCommands) and results.
READ_ACTIONS = (
    "DescribeAccountAttributes",
    "DescribeInstances",
    "DescribeCloudAssistantStatus",
    "DescribeCommands",
    "DescribeInvocations",
    "DescribeInvocationResults",
)
# The run itself (InvokeCommand) and `fanout stop` (StopInvocation).
SPEND_ACTIONS = ("InvokeCommand", "StopInvocation")
# The commands fanout makes: `--script` creates its command in each region (CreateCommand),
# `fanout commands --prune` deletes those no open run uses (DeleteCommand).
COMMAND_ACTIONS = ("CreateCommand", "DeleteCommand")
USED_ACTIONS = READ_ACTIONS + SPEND_ACTIONS + COMMAND_ACTIONS


def ram_permission(action: str) -> str:
    """The RAM action that allows an ECS API action."""
    return f"ecs:{action}"


def policy_document() -> dict[str, Any]:
    """A RAM policy allowing exactly the actions fanout uses (in every region, every resource)."""
    return {
        "Version": "1",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [ram_permission(a) for a in USED_ACTIONS],
                "Resource": "*",
            }
        ],
    }
