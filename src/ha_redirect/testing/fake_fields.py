"""Packet fields in the fake switch: values as it compares them, bit
ranges as move and output:field use them, and the error it raises."""

from ha_redirect import model
from ha_redirect import ovs_constraints


class FakeFlowTableError(AssertionError):
    """A flow or packet the real switch would refuse or handle arbitrarily."""


def normalize(field: str, value):
    """A field value in the one form the fake compares (MACs and IPv4
    addresses as model normalises them)."""
    if value is None:
        return None
    if field in ovs_constraints.MAC_FIELDS:
        return model.normalize_mac(value, field)
    if field in ovs_constraints.IPV4_FIELDS:
        return model.normalize_ipv4(value, field)
    return value


def read_bits(packet, field, ofs, n_bits) -> int:
    value = packet.get(field, 0)
    if not isinstance(value, int):
        raise FakeFlowTableError(f'cannot read bits of {field}={value!r}')
    return (value >> ofs) & ((1 << n_bits) - 1)


def write_bits(old, ofs, n_bits, bits) -> int:
    mask = ((1 << n_bits) - 1) << ofs
    return (old & ~mask) | ((bits << ofs) & mask)
