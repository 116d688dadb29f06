"""Identity service over the real socket: name, version, capabilities and readiness."""

from __future__ import annotations

import re

from juicefs_csi.csi.proto import csi_pb2
from tests.support.driver import DriverProcess

PluginCapability = csi_pb2.PluginCapability


def test_plugin_info_names_the_driver_and_a_version(driver: DriverProcess) -> None:
    info = driver.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=10)
    assert info.name == "csi.juicefs.com"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", info.vendor_version), info.vendor_version


def test_plugin_capabilities_offer_controller_and_online_expansion(driver: DriverProcess) -> None:
    response = driver.identity.GetPluginCapabilities(csi_pb2.GetPluginCapabilitiesRequest(), timeout=10)
    services = {c.service.type for c in response.capabilities if c.WhichOneof("type") == "service"}
    expansions = {c.volume_expansion.type for c in response.capabilities if c.WhichOneof("type") == "volume_expansion"}
    assert PluginCapability.Service.CONTROLLER_SERVICE in services
    assert expansions == {PluginCapability.VolumeExpansion.ONLINE}


def test_probe_is_ready(driver: DriverProcess) -> None:
    response = driver.identity.Probe(csi_pb2.ProbeRequest(), timeout=10)
    assert response.HasField("ready")
    assert response.ready.value is True
