"""What a finished execution reports per instance: ErrorCode, ErrorInfo, Output and Dropped.

Sources, each value as the real service gives it:
- ErrorCode values and their ErrorInfo texts: the SDK models' per-instance fields
  (alibabacloud-go-sdk ecs-20140526 `describe_invocations_response_body_model.go`, ErrorCode and
  ErrorInfo docstrings; the same lists in the Java and PHP models; aliyun-api-facts.md 2.3, 10).
  An empty ErrorCode means the command ran as expected.
- A failed delivery (ClientNotRunning, ClientNotResponse, DeliveryTimeout, InstanceNotRunning)
  is per-instance status Aborted: "The command failed to be sent to the instance" (the same
  models' InvocationStatus docstring).
- Output keeps the *end* of a long log: the agent drops the first bytes beyond the quota and
  reports their number as Dropped (aliyun/aliyun_assist_client `agent/taskengine/basetask.go`,
  `getReportString`: `bytes_data[task.droped:]`); the API's limit is 24 KB (facts 2.1, Dropped).
Pure: no clock, no I/O.
"""

from __future__ import annotations

__all__ = [
    "AGENT_FAILURE_INFO",
    "EXIT_NONZERO",
    "OUTPUT_LIMIT_BYTES",
    "error_info",
    "simulated_output",
    "tail",
]

OUTPUT_LIMIT_BYTES = 24 * 1024  # facts 2.1: Output beyond 24 KB is dropped (the first bytes go)
EXIT_NONZERO = "ExitCodeNonzero"

# ErrorCode -> ErrorInfo, the texts of the SDK models' ErrorInfo list.
AGENT_FAILURE_INFO = {
    "ClientNotRunning": "the aliyun service is not running on the instance",
    "ClientNotResponse": "the aliyun service in the instance does not response",
    "DeliveryTimeout": "the command delivery has been timeout",
}
_INFO = {
    **AGENT_FAILURE_INFO,
    "InstanceNotRunning": "the instance is not running when create task",
    "InstanceReleased": "the instance has released when create task",
    "InstanceNotExists": "the specified instance does not exists",
    "ExecutionTimeout": "the command execution has been timeout",
    "ExecutionInterrupted": "the command execution has been interrupted",
    "ExecutionException": "the command execution got an exception",
    EXIT_NONZERO: "the command execution exit code is not zero",
}


def error_info(code: str) -> str:
    """The ErrorInfo text of an ErrorCode ("" for none)."""
    return _INFO.get(code, "") if code else ""


def simulated_output(instance_id: str, exit_code: int, size_bytes: int, echoed: str = "") -> str:
    """What the simulated command prints: a greeting, what its `echo` lines print (`echoed`),
    `size_bytes` of log lines when asked, and for a failure a last line naming the exit code
    (the line a reader looks for)."""
    head = f"hello from {instance_id}\n{echoed}"
    last = f"error: simulated failure, exit code {exit_code}\n" if exit_code else ""
    filler = f"{instance_id} log line\n"
    lines = max(0, (size_bytes - len(head) - len(last)) // len(filler))
    return head + filler * lines + last


def tail(output: str, limit_bytes: int = OUTPUT_LIMIT_BYTES) -> tuple[str, int]:
    """The last `limit_bytes` of the UTF-8 output and the number of bytes dropped before them."""
    data = output.encode()
    dropped = max(0, len(data) - limit_bytes)
    if not dropped:
        return output, 0
    return data[dropped:].decode(errors="ignore"), dropped
