"""`dev --valkey --instances N` ports: PORT upward, never a stand-in's port."""

from diminuendo.cli import instance_ports


def test_instances_skip_the_stand_ins_ports() -> None:
    assert instance_ports(8001, 2, {8002, 8004, 8005}) == [8001, 8003]
    assert instance_ports(8001, 4, {8002, 8004, 8005}) == [8001, 8003, 8006, 8007]


def test_without_stand_ins_the_ports_are_consecutive() -> None:
    assert instance_ports(9000, 3, set()) == [9000, 9001, 9002]
