"""The Alibaba Cloud ECS API: signing, credentials, endpoints, wire format and the HTTP client.

```python
from fanout.aliyun import EcsClient, ClientOptions, load_credentials

async with EcsClient(load_credentials(), ClientOptions(endpoint="http://127.0.0.1:8080")) as ecs:
    result = await ecs.invoke_command("cn-hangzhou", "c-...", ["i-..."], client_token="run-1-b-0")
```
"""

from __future__ import annotations

from fanout.aliyun.client import ClientOptions, EcsClient
from fanout.aliyun.credentials import Credentials, load_credentials
from fanout.aliyun.endpoints import KNOWN_REGIONS, resolve_endpoint
from fanout.aliyun.responses import (
    AgentStatus,
    Command,
    Instance,
    InstanceResult,
    Invocation,
    InvokeResult,
)

__all__ = [
    "KNOWN_REGIONS",
    "AgentStatus",
    "ClientOptions",
    "Command",
    "Credentials",
    "EcsClient",
    "Instance",
    "InstanceResult",
    "Invocation",
    "InvokeResult",
    "load_credentials",
    "resolve_endpoint",
]
