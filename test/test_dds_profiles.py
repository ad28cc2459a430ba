"""The Fast DDS XML profiles ros/dds.py writes: well-formed, with exactly the transports asked for."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from scene_perception.ros.dds import shm_profile_xml, udp_profile_xml

NS = {"d": "http://www.eprosima.com"}


def _transports(xml: str) -> tuple[list[dict[str, str]], list[str]]:
    root = ET.fromstring(xml)
    descriptors = [{child.tag.split("}")[1]: child.text for child in d}
                   for d in root.findall(".//d:transport_descriptor", NS)]
    participant = root.find(".//d:participant", NS)
    assert participant is not None and participant.get("is_default_profile") == "true"
    assert participant.find(".//d:useBuiltinTransports", NS).text == "false"
    return descriptors, [t.text for t in participant.findall(".//d:userTransports/d:transport_id", NS)]


def test_shared_memory_profile() -> None:
    descriptors, used = _transports(shm_profile_xml(1 << 20))
    assert descriptors == [{"transport_id": "scene_perception_shm", "type": "SHM", "segment_size": "1048576"},
                           {"transport_id": "scene_perception_udp", "type": "UDPv4"}]
    assert used == ["scene_perception_shm", "scene_perception_udp"]
    with pytest.raises(ValueError, match="positive"):
        shm_profile_xml(0)


def test_udp_only_profile() -> None:
    descriptors, used = _transports(udp_profile_xml(212992))
    assert descriptors == [{"transport_id": "scene_perception_udp", "type": "UDPv4",
                            "receiveBufferSize": "212992"}]
    assert used == ["scene_perception_udp"]
