"""A faithful local stand-in for the Alibaba Cloud ECS RPC API (DESIGN section 5).

Used by the tests, the benchmarks and `fanout demo`: signature checks (both schemes), the
Cloud Assistant actions with their real error codes and response shapes, a seeded simulated
fleet, seeded fault injection, and `/_emulator/*` endpoints to inspect and steer it.

```python
async with running_emulator(EmulatorConfig(instances_per_region=1000)) as emu:
    ...  # point a client at emu.url with DEMO_ACCESS_KEY_ID / DEMO_ACCESS_KEY_SECRET
```

Unauthenticated, uncounted control endpoints:
- `GET /_emulator/state`: per region the calls by action, the quota used and the account's
  commands (each region's own ids); every accepted invocation with every parameter it carried.
- `POST /_emulator/clock {"advance_s": N, "freeze": bool}`: move the emulator clock forward
  (executions progress, the UTC+8 quota day rolls over); `freeze` stops it between advances.
- `POST /_emulator/instances {"instance_ids": [...], "status": "Stopped"|"Running",
  "agent_online": bool}`: change instances (unfinished executions become Aborted / interrupted).
- `POST /_emulator/quota/reset {"region": optional}`: forget today's quota usage.
- `POST /_emulator/metadata {"deny": bool}`: the instance metadata service (served with
  `ram_role`) refuses (or serves again) its role's credentials.

With `ram_role`, the ECS instance metadata service's credential paths are served too
(`PUT /latest/api/token`, `GET /latest/meta-data/ram/security-credentials/[ROLE]`): STS
credentials that the API accepts until they expire (`sts_ttl_s`, on the emulator clock).
"""

from __future__ import annotations

from fanout.emulator.config import (
    DEMO_ACCESS_KEY_ID,
    DEMO_ACCESS_KEY_SECRET,
    DEMO_COMMAND_ID,
    DEMO_COMMAND_NAME,
    DEMO_PARAM_COMMAND_ID,
    DEMO_PARAM_COMMAND_NAME,
    EmulatorConfig,
    demo_command_id,
)
from fanout.emulator.server import Emulator, EmulatorStartError, EmulatorThread, running_emulator

__all__ = [
    "DEMO_ACCESS_KEY_ID",
    "DEMO_ACCESS_KEY_SECRET",
    "DEMO_COMMAND_ID",
    "DEMO_COMMAND_NAME",
    "DEMO_PARAM_COMMAND_ID",
    "DEMO_PARAM_COMMAND_NAME",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStartError",
    "EmulatorThread",
    "demo_command_id",
    "running_emulator",
]
