"""The Alibaba Cloud ECS API: signing, credentials, endpoints, wire format and the HTTP client.

```python
from fanout.aliyun import EcsClient, ClientOptions, load_credentials

async with EcsClient(load_credentials(), ClientOptions(endpoint="http://127.0.0.1:8080")) as ecs:
    result = await ecs.invoke_command("cn-hangzhou", "c-...", ["i-..."], client_token="run-1-b-0")
```

Names are loaded on first use: importing a pure part (`fanout.aliyun.signing`, `wire`,
`endpoints`) runs this file, and must not load aiohttp with the client (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fanout._lazy import lazy_getattr

if TYPE_CHECKING:
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

# Public name -> the module that defines it (read by tests/test_architecture.py).
_EXPORTS = {
    "KNOWN_REGIONS": "fanout.aliyun.endpoints",
    "AgentStatus": "fanout.aliyun.responses",
    "ClientOptions": "fanout.aliyun.client",
    "Command": "fanout.aliyun.responses",
    "Credentials": "fanout.aliyun.credentials",
    "EcsClient": "fanout.aliyun.client",
    "Instance": "fanout.aliyun.responses",
    "InstanceResult": "fanout.aliyun.responses",
    "Invocation": "fanout.aliyun.responses",
    "InvokeResult": "fanout.aliyun.responses",
    "load_credentials": "fanout.aliyun.credentials",
    "resolve_endpoint": "fanout.aliyun.endpoints",
}

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


__getattr__ = lazy_getattr(__name__, _EXPORTS)
