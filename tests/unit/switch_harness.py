"""A simulated switch: the fake flow table plus the PacketIn round trip.

Packets sent to the controller are handed to the policy as the os-ken app
would, its answer is applied, and a PacketOut continues the packet on its way.
"""

from ha_redirect import model
from ha_redirect import testing

CLIENT_MAC = '00:00:00:00:01:03'
CLIENT_IP = '10.0.0.103'


def tcp(in_port, src_ip, dst_ip, src_port, dst_port, src_mac, dst_mac,
        flags=model.TCP_SYN):
    return dict(in_port=in_port, eth_src=src_mac, eth_dst=dst_mac,
                eth_type=model.ETH_TYPE_IPV4, ip_proto=model.IP_PROTO_TCP,
                ipv4_src=src_ip, ipv4_dst=dst_ip, tcp_src=src_port,
                tcp_dst=dst_port, tcp_flags=flags)


def arp_request(in_port, sender_mac, sender_ip, target_ip):
    return dict(in_port=in_port, eth_src=sender_mac,
                eth_dst='ff:ff:ff:ff:ff:ff', eth_type=model.ETH_TYPE_ARP,
                arp_op=model.ARP_REQUEST, arp_spa=sender_ip,
                arp_tpa=target_ip)


class SimulatedSwitch:
    def __init__(self, policy, datapath_id=1, table=None):
        self.policy = policy
        self.datapath_id = datapath_id
        self.table = table or testing.FakeFlowTable()
        self.now = 0.0

    def connect(self, port_states):
        for port_no, is_up in port_states.items():
            self.table.set_port_live(self.datapath_id, port_no, is_up)
        self.apply(self.policy.on_switch_connected(
            self.datapath_id, port_states, self.now))

    def port(self, port_no, is_up):
        self.table.set_port_live(self.datapath_id, port_no, is_up)
        self.apply(self.policy.on_port_status(
            self.datapath_id, port_no, is_up, self.now))

    def apply(self, messages):
        self.table.apply(messages, now=self.now)
        for removed in self.table.removed:
            self.policy.on_flow_removed(removed.datapath_id, removed.cookie,
                                        removed.match, self.now)
        self.table.removed.clear()

    def send(self, packet):
        """Deliveries of one packet, after any controller round trip."""
        deliveries = []
        for delivery in self.table.process(self.datapath_id, packet,
                                           now=self.now):
            if delivery.port != testing.CONTROLLER:
                deliveries.append(delivery)
                continue
            deliveries += self._controller(delivery.packet)
        return deliveries

    def tick(self, seconds):
        self.now += seconds
        self.apply(self.policy.on_tick(self.now))

    def out_ports(self, packet):
        return [d.port for d in self.send(packet)]

    def _controller(self, packet):
        if packet['eth_type'] == model.ETH_TYPE_ARP:
            event = model.ArpRequest(packet['in_port'], packet['eth_src'],
                                     packet['arp_spa'], packet['arp_tpa'])
        else:
            event = model.TcpPacket(
                packet['in_port'], eth_src=packet['eth_src'],
                eth_dst=packet['eth_dst'], ipv4_src=packet['ipv4_src'],
                ipv4_dst=packet['ipv4_dst'], tcp_src=packet['tcp_src'],
                tcp_dst=packet['tcp_dst'],
                tcp_flags=packet.get('tcp_flags', 0), data=b'pkt')
        sent_before = len(self.table.sent)
        self.apply(self.policy.on_packet(self.datapath_id, event, self.now))
        deliveries = []
        for message in self.table.sent[sent_before:]:
            if isinstance(message, model.ArpReply):
                deliveries.append(testing.Delivery(message.out_port, {
                    'eth_type': model.ETH_TYPE_ARP,
                    'arp_op': model.ARP_REPLY,
                    'eth_src': message.sender_mac,
                    'arp_sha': message.sender_mac,
                    'arp_spa': message.sender_ip,
                    'arp_tpa': message.target_ip}))
            elif isinstance(message, model.PacketOut):
                released = dict(packet)
                for action in message.actions:
                    if isinstance(action, model.SetField):
                        released[action.field] = action.value
                    elif isinstance(action, model.Output):
                        deliveries.append(testing.Delivery(action.port,
                                                           dict(released)))
        return deliveries
