"""The aiohttp application: the RPC endpoint `/` and the unauthenticated `/_emulator/*` controls.

Every RPC request goes through the same steps, in this order:
parse -> authenticate -> action and region -> count the call -> latency -> RAM permission ->
rate limit -> seeded faults (throttle, error, drop) -> the action -> accept-then-drop -> render.
A dropped request closes the TCP connection without any response; every error answer after the
call was counted is counted too, by action and code (`refused` in `/_emulator/state`).

- RAM permission (`denied_actions`): a RAM user without `ecs:<Action>` gets HTTP 403
  `Forbidden.RAM`, "User not authorized to operate on the specified resource, or this API
  doesn't support RAM.", with `AccessDeniedDetail.AuthAction` (ECS's announcement of 2025-09 on
  the authentication of query APIs: Describe calls without permission answer this, no longer an
  empty 200).
- Throttling (`throttle_code`, HTTP 400 as the SDKs expect a client error they may retry): the
  legacy Python SDK retries the code `Throttling` (facts 6.5); the new SDK raises its throttling
  exception when `x-acs-retry-after` is present (facts 6.1), sent with `throttle_retry_after`
  as the milliseconds to the end of the window.
The instance metadata service (`fanout.emulator.metadata`) shares the port.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from fanout.emulator.actions import ACTIONS, Handler
from fanout.emulator.auth import Authenticator, RequestView
from fanout.emulator.faults import Fault, FaultInjector, QpsLimiter
from fanout.emulator.metadata import TOKEN_HEADER, TOKEN_TTL_HEADER
from fanout.emulator.params import Params
from fanout.emulator.state import Call, World
from fanout.emulator.wire import (
    ApiFault,
    missing_parameter,
    new_request_id,
    parse_form,
    render,
    render_error,
)

__all__ = ["API_VERSION", "EmulatorApp"]

API_VERSION = "2014-05-26"
_FORM_TYPE = "application/x-www-form-urlencoded"
_MAX_BODY_BYTES = 4 * 1024 * 1024  # far above any real RPC request
# InvokeCommand spends half its latency "in flight", where a repeated ClientToken is still
# processing; CreateCommand likewise, after the command exists and before the answer leaves.
_INVOKE_IN_FLIGHT_SHARE = 0.5
_IN_FLIGHT_ACTIONS = frozenset({"InvokeCommand", "CreateCommand"})


class _Dropped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The connection must be closed without an answer."""


class EmulatorApp:
    """Request handling over one `World` (all state lives in the server's event loop)."""

    def __init__(self, world: World) -> None:
        config = world.config
        self.world = world
        self.auth = Authenticator(
            config.access_keys,
            config.sts_tokens,
            config.max_clock_skew_s,
            issued=world.metadata.issued,
            now=world.clock.now,
        )
        self.faults = FaultInjector(config, world.clock.now())
        self.qps = QpsLimiter(config.qps, config.region_qps, config.throttle_window_s)
        self._latency_s = config.latency_ms / 1000

    def build(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_route("GET", "/", self.rpc)
        app.router.add_route("POST", "/", self.rpc)
        app.router.add_get("/_emulator/state", self.state)
        app.router.add_post("/_emulator/clock", self.clock)
        app.router.add_post("/_emulator/instances", self.instances)
        app.router.add_post("/_emulator/quota/reset", self.quota_reset)
        app.router.add_post("/_emulator/metadata", self.metadata_control)
        app.router.add_put("/latest/api/token", self.metadata_token)
        app.router.add_get("/latest/meta-data/ram/security-credentials/", self.metadata_role)
        app.router.add_get(
            "/latest/meta-data/ram/security-credentials/{role}", self.metadata_credentials
        )
        return app

    async def rpc(self, request: web.Request) -> web.StreamResponse:
        """One RPC call, answered with a body, an error body, or a dropped connection."""
        request_id = new_request_id()
        view = await _request_view(request)
        xml = view.params.get("Format", "").lower() == "xml"
        try:
            action, body = await self._process(view)
        except ApiFault as fault:
            data, content_type = render_error(fault, request_id, xml=xml)
            response = _response(fault.status, data, content_type, request_id)
            response.headers.update(fault.headers)
            return response
        except _Dropped:
            return _drop_connection(request)
        data, content_type = render({"RequestId": request_id, **body}, xml=xml, action=action)
        return _response(200, data, content_type, request_id)

    async def _process(self, view: RequestView) -> tuple[str, dict[str, Any]]:
        params = Params(view.params)
        try:
            key_id = self.auth.verify(view)
        except ApiFault as fault:
            named = params.get("Action") or view.headers.get("x-acs-action", "") or "?"
            refused = self.world.unauthenticated
            refused[named] = refused.get(named, 0) + 1
            self.world.count_rejection(fault.code)
            raise
        action, handler = self._action(params, view.headers)
        region = self._region(params)
        self.world.count_call(region, action)
        try:
            return await self._counted(params, action, handler, region, key_id)
        except ApiFault as fault:
            self.world.count_refusal(region, action, fault.code)
            raise

    async def _counted(
        self,
        params: Params,
        action: str,
        handler: Handler,
        region: str,
        key_id: str,
    ) -> tuple[str, dict[str, Any]]:
        """The steps after the call was counted: latency, permission, limits, faults, action."""
        world = self.world
        in_flight = action in _IN_FLIGHT_ACTIONS
        in_flight_s = self._latency_s * _INVOKE_IN_FLIGHT_SHARE if in_flight else 0
        if self._latency_s:
            await world.clock.sleep(self._latency_s - in_flight_s)
        if action in world.config.denied_actions:
            raise _forbidden(action, key_id)
        now_s = world.clock.now()
        if not self.qps.allow(region, action, now_s):
            raise self._throttled(now_s)
        fault = self.faults.before(region, action, now_s)
        if fault is Fault.THROTTLE:
            raise self._throttled(now_s)
        if fault is Fault.ERROR:
            raise ApiFault(500, "InternalError.Dispatch", "An error occurred when you dispatched the request.")  # fmt: skip
        if fault is Fault.DROP:
            raise _Dropped
        call = Call(world, region, params, world.clock.now(), in_flight_s)
        body = await handler(call)
        if self.faults.drop_after(action):
            raise _Dropped
        return action, body

    def _action(self, params: Params, headers: Mapping[str, str]) -> tuple[str, Handler]:
        action = params.get("Action") or headers.get("x-acs-action", "")
        if not action:
            raise missing_parameter("Action")
        handler = ACTIONS.get(action)
        if handler is None:
            raise ApiFault(404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.")  # fmt: skip
        version = params.get("Version") or headers.get("x-acs-version", "")
        if not version:
            raise missing_parameter("Version")
        if version != API_VERSION:
            raise ApiFault(400, "InvalidVersion", "Specified parameter Version is not valid.")
        return action, handler

    def _region(self, params: Params) -> str:
        region = params.get("RegionId")
        if not region:
            raise missing_parameter("RegionId")
        if region not in self.world.regions:
            raise ApiFault(
                404, "InvalidRegionId.NotFound", "The specified RegionId does not exist."
            )
        return region

    async def state(self, request: web.Request) -> web.Response:
        """GET /_emulator/state: counters, quota and every accepted invocation
        (`?executions=1`: with each instance's status and exact finish time)."""
        executions = request.query.get("executions", "") in ("1", "true")
        return web.json_response(self.world.snapshot(executions=executions))

    async def clock(self, request: web.Request) -> web.Response:
        """POST /_emulator/clock {"advance_s": N, "freeze": bool}: move (or freeze) the clock.

        Executions, the quota day, the QPS windows and the simulated latency all follow it.
        """
        data = await _json_object(request)
        advance = data.get("advance_s", 0)
        if not isinstance(advance, int | float) or isinstance(advance, bool) or advance < 0:
            raise _control_error("advance_s must be a number >= 0")
        freeze = data.get("freeze")
        if freeze is not None and not isinstance(freeze, bool):
            raise _control_error("freeze must be true or false")
        clock = self.world.clock
        clock.advance(float(advance))
        if freeze is not None:
            clock.freeze(freeze)
        return web.json_response(
            {"now_s": clock.now(), "offset_s": clock.offset_s, "frozen": clock.frozen}
        )

    async def instances(self, request: web.Request) -> web.Response:
        """POST /_emulator/instances {"instance_ids", "status", "agent_online"}: change instances."""
        data = await _json_object(request)
        ids = data.get("instance_ids")
        status, agent_online = data.get("status"), data.get("agent_online")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _control_error("instance_ids must be a list of instance ids")
        if status not in (None, "Running", "Stopped"):
            raise _control_error("status must be Running or Stopped")
        if agent_online is not None and not isinstance(agent_online, bool):
            raise _control_error("agent_online must be true or false")
        world = self.world
        found = {iid: world.fleet.find(iid) for iid in ids}
        unknown = [iid for iid, inst in found.items() if inst is None]
        if unknown:
            raise _control_error(f"unknown instances: {', '.join(unknown)}", status=404)
        now_s = world.clock.now()
        for inst in found.values():
            assert inst is not None
            inst.status = status or inst.status
            inst.agent_online = inst.agent_online if agent_online is None else agent_online
            world.fleet.regions[inst.region].version += 1
            world.invocations.instance_changed(inst, now_s)
        return web.json_response({"updated": len(found)})

    def _throttled(self, now_s: float) -> ApiFault:
        """The throttling answer; with `throttle_retry_after`, when the window ends (ms)."""
        config = self.world.config
        headers = {}
        if config.throttle_retry_after:
            wait_ms = max(1, round((self.faults.window_end(now_s) - now_s) * 1000))
            headers["x-acs-retry-after"] = str(wait_ms)
        message = _THROTTLE_MESSAGES.get(config.throttle_code, _THROTTLE_MESSAGES["Throttling"])
        return ApiFault(400, config.throttle_code, message, headers=headers)

    async def metadata_token(self, request: web.Request) -> web.Response:
        """PUT /latest/api/token: an IMDSv2 session token (text)."""
        token = self.world.metadata.session_token(request.headers.get(TOKEN_TTL_HEADER))
        if token is None:
            return web.Response(status=400, text="Bad Request")
        return web.Response(text=token)

    async def metadata_role(self, request: web.Request) -> web.Response:
        """GET .../security-credentials/: the instance's RAM role name."""
        service = self.world.metadata
        if not service.session_ok(request.headers.get(TOKEN_HEADER)):
            return web.Response(status=401, text="Unauthorized")
        if service.role is None or service.denied:
            return web.Response(status=404, text="Not Found")
        return web.Response(text=service.role)

    async def metadata_credentials(self, request: web.Request) -> web.Response:
        """GET .../security-credentials/<role>: the role's STS credentials (JSON)."""
        service = self.world.metadata
        if not service.session_ok(request.headers.get(TOKEN_HEADER)):
            return web.Response(status=401, text="Unauthorized")
        if not service.serves(request.match_info["role"]):
            return web.Response(status=404, text="Not Found")
        return web.json_response(service.credentials().document())

    async def metadata_control(self, request: web.Request) -> web.Response:
        """POST /_emulator/metadata {"deny": bool}: refuse (or serve again) the role's credentials."""
        data = await _json_object(request)
        deny = data.get("deny")
        if not isinstance(deny, bool):
            raise _control_error("deny must be true or false")
        self.world.metadata.denied = deny
        return web.json_response({"denied": deny})

    async def quota_reset(self, request: web.Request) -> web.Response:
        """POST /_emulator/quota/reset {"region": optional}: forget today's quota usage."""
        data = await _json_object(request) if request.can_read_body else {}
        region = data.get("region")
        if region is not None and region not in self.world.regions:
            raise _control_error(f"unknown region: {region}", status=404)
        self.world.reset_quota(region)
        return web.json_response({"reset": region or "all"})


async def _request_view(request: web.Request) -> RequestView:
    """Decode the raw query (and a form body) ourselves: clients encode differently."""
    body = await request.read()
    raw_query = request.raw_path.partition("?")[2]
    query = parse_form(raw_query)
    params = dict(query)
    if body and request.headers.get("Content-Type", "").startswith(_FORM_TYPE):
        params.update(parse_form(body.decode("utf-8", errors="replace")))
    headers = {name.lower(): value for name, value in request.headers.items()}
    return RequestView(request.method, request.path, query, params, headers, body)


_THROTTLE_MESSAGES = {
    "Throttling": "Request was denied due to flow control.",
    "Throttling.User": "Request was denied due to user flow control.",
    "Throttling.Api": "Request was denied due to api flow control.",
}


def _forbidden(action: str, key_id: str) -> ApiFault:
    """What ECS answers a RAM user without the `ecs:<action>` permission."""
    return ApiFault(
        403,
        "Forbidden.RAM",
        "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
        extra={
            "AccessDeniedDetail": {
                "AuthAction": f"ecs:{action}",
                "AuthPrincipalType": "SubUser",
                "AuthPrincipalDisplayName": key_id,
                "NoPermissionType": "ImplicitDeny",
                "PolicyType": "AccountLevelIdentityBasedPolicy",
            }
        },
    )


def _response(status: int, body: bytes, content_type: str, request_id: str) -> web.Response:
    return web.Response(
        status=status,
        body=body,
        headers={"Content-Type": content_type, "x-acs-request-id": request_id},
    )


def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the TCP connection at once: the client sees a disconnect, never a response."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Writing this to the closed transport fails quietly inside aiohttp ("client disconnected").
    return web.Response(status=204)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _control_error("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise _control_error("the body must be a JSON object")
    return data


def _control_error(message: str, status: int = 400) -> web.HTTPException:
    body = json.dumps({"error": message})
    if status == 404:
        return web.HTTPNotFound(text=body, content_type="application/json")
    return web.HTTPBadRequest(text=body, content_type="application/json")
