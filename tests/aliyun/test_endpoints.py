"""Endpoint resolution as the official SDK does it, and the known region list."""

from __future__ import annotations

import pytest

from fanout.aliyun.endpoints import KNOWN_REGIONS, is_region_id, resolve_endpoint
from fanout.errors import ConfigError


@pytest.mark.parametrize(
    ("region", "network", "url"),
    [
        ("cn-hangzhou", "public", "https://ecs-cn-hangzhou.aliyuncs.com"),
        ("cn-hangzhou", "vpc", "https://ecs-cn-hangzhou.aliyuncs.com"),
        ("cn-shanghai", "public", "https://ecs.cn-shanghai.aliyuncs.com"),
        ("cn-shanghai", "vpc", "https://ecs-vpc.cn-shanghai.aliyuncs.com"),
        ("ap-southeast-1", "public", "https://ecs.ap-southeast-1.aliyuncs.com"),
        ("eu-central-1", "vpc", "https://ecs-vpc.eu-central-1.aliyuncs.com"),
        ("cn-hangzhou-finance", "public", "https://ecs.aliyuncs.com"),
        ("cn-hangzhou-finance", "vpc", "https://ecs.aliyuncs.com"),
        ("cn-north-2-gov-1", "public", "https://ecs.aliyuncs.com"),
        ("cn-shanghai-finance-1", "public", "https://ecs-cn-hangzhou.aliyuncs.com"),
        ("cn-shenzhen-finance-1", "vpc", "https://ecs-cn-hangzhou.aliyuncs.com"),
    ],
)
def test_resolution(region: str, network: str, url: str) -> None:
    """The SDK's map wins (even in a VPC); otherwise ecs[-vpc].{region}.aliyuncs.com over https."""
    assert resolve_endpoint(region, network=network) == url


def test_override_wins_for_every_region() -> None:
    """An explicit endpoint is used as given, whatever the region or network."""
    for region in ("cn-hangzhou", "us-east-1", "anything-goes"):
        assert resolve_endpoint(region, network="vpc", override="http://127.0.0.1:1234") == (
            "http://127.0.0.1:1234"
        )


def test_unknown_network_is_refused() -> None:
    """A network type other than public/vpc is a configuration error."""
    with pytest.raises(ConfigError, match="network 'intranet'"):
        resolve_endpoint("cn-beijing", network="intranet")


@pytest.mark.parametrize("region", ["", "cn_hangzhou", "CN-HANGZHOU", "cn-hangzhou.evil.com", "x"])
def test_malformed_region_is_refused(region: str) -> None:
    """A value that cannot be a region id never becomes part of a host name."""
    with pytest.raises(ConfigError):
        resolve_endpoint(region)
    assert not is_region_id(region)


def test_known_regions() -> None:
    """The known list holds the main public regions, all well-formed, and an unknown one resolves."""
    assert {"cn-hangzhou", "cn-shanghai", "ap-southeast-1", "us-east-1", "eu-central-1"} <= (
        KNOWN_REGIONS
    )
    assert all(is_region_id(r) for r in KNOWN_REGIONS)
    assert "cn-moon-1" not in KNOWN_REGIONS
    assert resolve_endpoint("cn-moon-1") == "https://ecs.cn-moon-1.aliyuncs.com"
