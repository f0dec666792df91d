"""Which host serves the ECS API of a region, resolved the way the official SDK does it.

Order (`aliyun-api-facts.md` section 4): an explicit override wins; then the SDK's hard-coded
endpoint map (even for `network="vpc"`); then the regional rule `ecs.{region}.aliyuncs.com`, or
`ecs-vpc.{region}.aliyuncs.com` inside a VPC. Pure: no I/O, no environment reads.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from fanout.errors import ConfigError

__all__ = [
    "KNOWN_REGIONS",
    "NETWORKS",
    "check_endpoint",
    "is_loopback",
    "is_region_id",
    "resolve_endpoint",
]

# The public ECS regions (DescribeRegions, 2025) plus the finance and government clouds.
KNOWN_REGIONS: frozenset[str] = frozenset(
    {
        # Chinese mainland
        "cn-qingdao",
        "cn-beijing",
        "cn-zhangjiakou",
        "cn-huhehaote",
        "cn-wulanchabu",
        "cn-hangzhou",
        "cn-shanghai",
        "cn-nanjing",
        "cn-fuzhou",
        "cn-shenzhen",
        "cn-heyuan",
        "cn-guangzhou",
        "cn-wuhan-lr",
        "cn-chengdu",
        # Hong Kong (China) and Asia Pacific
        "cn-hongkong",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ap-south-1",
        # Europe, Americas, Middle East
        "us-east-1",
        "us-west-1",
        "na-south-1",
        "eu-west-1",
        "eu-central-1",
        "me-east-1",
        "me-central-1",
        # finance and government clouds
        "cn-hangzhou-finance",
        "cn-shanghai-finance-1",
        "cn-shenzhen-finance-1",
        "cn-beijing-finance-1",
        "cn-north-2-gov-1",
    }
)

NETWORKS = frozenset({"public", "vpc"})

_CENTRAL = "ecs.aliyuncs.com"
_HANGZHOU = "ecs-cn-hangzhou.aliyuncs.com"

# The `_endpoint_map` of the official ECS SDK (alibabacloud-ecs20140526): these regions are served
# by a fixed host, whatever the network type.
_ENDPOINT_MAP: dict[str, str] = {
    "cn-hangzhou": _HANGZHOU,
    "cn-shanghai-finance-1": _HANGZHOU,
    "cn-shenzhen-finance-1": _HANGZHOU,
    "cn-fujian": _HANGZHOU,
    "cn-beijing-nu16-b01": _HANGZHOU,
    "cn-haidian-cm12-c01": _HANGZHOU,
    "cn-hangzhou-bj-b01": _HANGZHOU,
    "cn-hangzhou-internal-prod-1": _HANGZHOU,
    "cn-hangzhou-internal-test-1": _HANGZHOU,
    "cn-hangzhou-internal-test-2": _HANGZHOU,
    "cn-hangzhou-internal-test-3": _HANGZHOU,
    "cn-hangzhou-test-306": _HANGZHOU,
    "cn-shanghai-et15-b01": _HANGZHOU,
    "cn-shanghai-et2-b01": _HANGZHOU,
    "cn-shanghai-internal-test-1": _HANGZHOU,
    "cn-shenzhen-st4-d01": _HANGZHOU,
    "cn-shenzhen-su18-b01": _HANGZHOU,
    "cn-zhangbei-na61-b01": _HANGZHOU,
    "cn-hangzhou-finance": _CENTRAL,
    "cn-north-2-gov-1": _CENTRAL,
    "cn-beijing-gov-1": _CENTRAL,
    "cn-beijing-finance-pop": _CENTRAL,
    "cn-hongkong-finance-pop": _CENTRAL,
    "ap-northeast-2-pop": _CENTRAL,
    "cn-shanghai-inner": _CENTRAL,
    "cn-shenzhen-inner": _CENTRAL,
    "cn-wuhan": _CENTRAL,
    "cn-yushanfang": _CENTRAL,
    "cn-zhangbei": _CENTRAL,
    "rus-west-1-pop": _CENTRAL,
    "cn-edge-1": "ecs.cn-qingdao-nebula.aliyuncs.com",
    "cn-huhehaote-nebula-1": "ecs.cn-qingdao-nebula.aliyuncs.com",
    "cn-zhengzhou-nebula-1": "ecs.cn-qingdao-nebula.aliyuncs.com",
    "cn-zhangjiakou-na62-a01": "ecs.cn-zhangjiakou.aliyuncs.com",
}

# A host: DNS labels (letters, digits, '-', '_') joined by dots, or an IPv4 / bracketless IPv6
# address as `urlsplit` gives it.
_HOST = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?|[0-9A-Fa-f:.]+(?:%[A-Za-z0-9]+)?"
)

# A region id is lowercase words joined by '-' (it becomes part of a DNS name).
_REGION_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)+$")


def is_region_id(value: str) -> bool:
    """True if `value` has the shape of a region id (known or not)."""
    return bool(_REGION_ID.fullmatch(value))


def resolve_endpoint(region: str, *, network: str = "public", override: str | None = None) -> str:
    """The base URL (`https://host` or the override as given) that serves `region`."""
    if override:
        return override.rstrip("/")
    if network not in NETWORKS:
        raise ConfigError(f"network {network!r} is not one of {', '.join(sorted(NETWORKS))}")
    if not is_region_id(region):
        raise ConfigError(f"{region!r} is not a region id (like cn-hangzhou)")
    host = _ENDPOINT_MAP.get(region)
    if host is None:
        prefix = "ecs-vpc" if network == "vpc" else "ecs"
        host = f"{prefix}.{region}.aliyuncs.com"
    return f"https://{host}"


def check_endpoint(url: str) -> str:
    """`url` if it can serve as the endpoint of every region (`http://` or `https://`, a host,
    a valid port, no user, query or fragment), else `ValueError` with the rule it breaks."""
    try:
        parts = urlsplit(url)
        port = parts.port  # parses it: out of range or not a number raises ValueError
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with https:// (or http:// for a local endpoint)")
    host = parts.hostname
    if not host or not _HOST.fullmatch(host):
        raise ValueError("must name a host (a DNS name or an IP address)")
    if port == 0:
        raise ValueError("port 0 is not a port a server listens on")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry a user name or password")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("must not have a query (?...) or a fragment (#...)")
    return url


def is_loopback(url: str) -> bool:
    """True if `url` names this machine (localhost, 127.0.0.0/8 or ::1)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
