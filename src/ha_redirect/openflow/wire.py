"""How our match fields are named and valued on the wire, in os-ken's terms.

Which fields exist and how wide they are is Open vSwitch's business, kept in
`ha_redirect.ovs_constraints`; this module only spells them for os-ken.
"""

import ipaddress

from os_ken.lib import addrconv

from ha_redirect import model
from ha_redirect import ovs_constraints

# Learn specs name fields with Nicira (NXM) headers, as `ovs-ofctl`'s learn
# syntax does: (os-ken field name, width in bits).
NXM_FIELDS = {name: (f'{name}_nxm', bits)
              for name, bits in ovs_constraints.LEARN_FIELD_BITS.items()}

# OpenFlow 1.3 has bundles as ONF's extension (experimenter messages);
# 1.4 on has message types of their own.
OFPT_EXPERIMENTER = 4
ONF_EXPERIMENTER_ID = 0x4f4e4600
ONF_ET_BUNDLE_CONTROL, ONF_ET_BUNDLE_ADD_MESSAGE = 2300, 2301
OFPT_BUNDLE_CONTROL, OFPT_BUNDLE_ADD_MESSAGE = 33, 34

# A Learn with a constant `output_port` loads the port into this register of
# the packet being processed and learns `output:<register>` from it (OVS
# accepts learned outputs only from a field, never as an immediate value).
LEARN_OUTPUT_REGISTER = 'reg7'


def nxm_name(field: str) -> str:
    """The os-ken name of a field a move or output:field reads or writes
    (checked against `ovs_constraints.check_bits` before)."""
    if field in ovs_constraints.CT_FIELD_BITS:
        return field
    return NXM_FIELDS[field][0]


def as_int(field: str, value) -> int:
    """A field value as the integer a learn spec or mask carries."""
    if field in ovs_constraints.MAC_FIELDS:
        return int.from_bytes(addrconv.mac.text_to_bin(
            model.normalize_mac(value, field)), 'big')
    if field in ovs_constraints.IPV4_FIELDS:
        return int(ipaddress.IPv4Address(value))
    return int(value)


def oxm_bits(field: str) -> int:
    """A match field's width in an OpenFlow (OXM) match."""
    return 32 if field == 'in_port' else ovs_constraints.FIELD_BITS[field]
