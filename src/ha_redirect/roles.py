"""Several controllers: each switch's OpenFlow role, and the write gate.

With an `ha_redirect.coordination.Election`, this controller writes to a
switch only as its MASTER, while it leads. `SwitchRoles` claims the switches
when elected (MASTER with the election's generation, then the takeover's
read, `ha_redirect.adoption`), yields them as SLAVE otherwise, and steps
down when the lease runs out or a switch names another master. Without an
election it lets every write through.
"""

import dataclasses
import logging
import typing

from os_ken.controller import event

from ha_redirect import adoption as adoption_mod
from ha_redirect import openflow
from ha_redirect import shell_part

# The shell's logger: operators and the lab read one source for all of it.
LOG = logging.getLogger('ha_redirect.app')

# A role reply's generation id when the switch has seen none yet (Open
# vSwitch).
_NO_GENERATION = (1 << 64) - 1


@dataclasses.dataclass(eq=False)
class EventLeadership(event.EventBase):
    """The election's news: ('elected', generation) or ('lost', why)."""
    kind: str
    detail: typing.Any


class SwitchRoles(shell_part.ShellPart):
    """This controller's role at each switch: 'slave', 'claiming' (a
    MASTER request or the takeover's read in flight) or 'master'.

    `datapaths` is the shell's table of live switches (dpid -> datapath);
    `adopt(adopted)` installs what a completed takeover read found missing.
    """

    def __init__(self, election, policy, clock, datapaths, post_later,
                 adopt):
        super().__init__(policy, clock, datapaths, post_later)
        self.election = election
        self._adopt = adopt
        self.roles = {}         # dpid -> 'slave', 'claiming', 'master'
        self._requests = {}     # (dpid, xid) -> what we asked for
        self.withheld = 0       # writes not sent: not the master
        self.adoption = adoption_mod.SwitchAdoption(self._requests, clock,
                                                    post_later)

    # The write gate -----------------------------------------------------

    def is_master(self, datapath_id):
        """Whether to act on the switch's events (stepping down if the
        lease ran out)."""
        return self.election is None or self._may_write(datapath_id)

    def permits(self, datapath_id, messages):
        """Whether `messages` may go to the switch; counts them if not."""
        if self.election is not None and messages and not self._may_write(
                datapath_id):
            self.withheld += len(messages)
            return False
        return True

    def leads(self, datapath_id):
        """MASTER with a live lease (or no election), without stepping
        down if not: for the gauges."""
        return self.election is None or (
            self.roles.get(datapath_id) == 'master'
            and self.election.may_write(self._clock()))

    def _may_write(self, datapath_id):
        if self.roles.get(datapath_id) != 'master':
            return False
        if self.election.may_write(self._clock()):
            return True
        # Out of lease (stopped, or cut off from the coordination server):
        # another may be elected any moment now.
        self.demote('the lease ran out')
        return False

    # Claiming and yielding ------------------------------------------------

    def join(self, datapath):
        """A switch (re)connected: claim it while we lead, else SLAVE."""
        if self.election.may_write(self._clock()):
            self.claim(datapath)
        else:
            self.yield_(datapath)

    def forget(self, datapath_id):
        """The switch is gone: so is everything asked of it."""
        self.roles.pop(datapath_id, None)
        self.adoption.forget(datapath_id)
        for key in [k for k in self._requests if k[0] == datapath_id]:
            del self._requests[key]

    def _ask_role(self, datapath, role, generation, purpose):
        ofproto = datapath.ofproto
        request = datapath.ofproto_parser.OFPRoleRequest(
            datapath, getattr(ofproto, role), generation)
        datapath.set_xid(request)
        self._requests[(datapath.id, request.xid)] = purpose
        datapath.send_msg(request)

    def claim(self, datapath):
        """Become the switch's MASTER with our generation; then adopt."""
        generation = self.election.generation
        if generation is None or not self.election.may_write(self._clock()):
            self.yield_(datapath)     # lost it meanwhile
            return
        self.roles[datapath.id] = 'claiming'
        self.adoption.forget(datapath.id)
        self._ask_role(datapath, 'OFPCR_ROLE_MASTER', generation, 'master')

    def yield_(self, datapath):
        """Become SLAVE: ask the switch's generation first, since a SLAVE
        request with an older one is refused too."""
        self.roles[datapath.id] = 'slave'
        self.adoption.forget(datapath.id)
        self._ask_role(datapath, 'OFPCR_ROLE_NOCHANGE', 0, 'query')

    def on_leadership(self, ev):
        if ev.kind == 'elected':
            LOG.warning('t=%.6f elected: generation %d; claiming %d switches',
                        self._clock(), ev.detail, len(self._datapaths))
            for datapath in list(self._datapaths.values()):
                self.claim(datapath)
        elif any(role != 'slave' for role in self.roles.values()):
            self.demote(ev.detail)

    def demote(self, why):
        """Stop being anyone's master: nothing more is written."""
        LOG.warning('t=%.6f stepping down to SLAVE: %s', self._clock(), why)
        self.election.resign(why)
        now = self._clock()
        for datapath in list(self._datapaths.values()):
            if self.roles.get(datapath.id) != 'slave':
                self._policy.on_switch_disconnected(datapath.id, now)
                self.yield_(datapath)

    # The switch's answers -------------------------------------------------

    def on_role_reply(self, msg):
        datapath = msg.datapath
        purpose = self._requests.pop((datapath.id, msg.xid), None)
        if purpose is None or self._datapaths.get(datapath.id) is not (
                datapath):
            return
        generation = msg.generation_id
        if generation == _NO_GENERATION:
            # None yet. A SLAVE request sets the one it carries: 0 can
            # never make the next master's look stale.
            generation = 0
        self.election.note_switch_generation(generation)
        if purpose == 'query':
            if self.roles.get(datapath.id) == 'slave':
                self._ask_role(datapath, 'OFPCR_ROLE_SLAVE', generation,
                               'slave')
        elif purpose == 'slave':
            LOG.info('t=%.6f dpid=%#x: SLAVE (generation %d)', self._clock(),
                     datapath.id, generation)
        elif purpose == 'master' and self.roles.get(datapath.id) == (
                'claiming'):
            self.adoption.start(datapath, self._policy.settings.cookie,
                                self._policy.strategy.pins_by_controller)

    def on_error(self, datapath, msg):
        """A refused role request or takeover read, or a write refused
        because another controller is MASTER now: True if it was one."""
        if self.election is None:
            return False
        ofproto = datapath.ofproto
        purpose = self._requests.get((datapath.id, msg.xid))
        if purpose in adoption_mod.READ_PURPOSES:
            # Read nothing, then: the takeover installs what is missing.
            LOG.warning('dpid=%#x: %s refused (%s); taking over without',
                        datapath.id, purpose,
                        openflow.describe_error(msg))
            self.on_read(adoption_mod.EmptyReply(datapath, msg.xid),
                         adoption_mod.READ_PURPOSES[purpose])
            return True
        self._requests.pop((datapath.id, msg.xid), None)
        if msg.type == ofproto.OFPET_ROLE_REQUEST_FAILED:
            if purpose in ('master', None):
                self.demote(f'dpid={datapath.id:#x} refused generation '
                            f'{self.election.generation} as stale')
            elif self.roles.get(datapath.id) == 'slave':
                self.yield_(datapath)     # the generation moved on: again
            return True
        if (msg.type == ofproto.OFPET_BAD_REQUEST
                and msg.code == ofproto.OFPBRC_IS_SLAVE):
            if self.roles.get(datapath.id) != 'slave':
                self.demote(f'dpid={datapath.id:#x} has another master')
            return True
        return False

    # The takeover's read --------------------------------------------------

    def is_read(self, msg, kind):
        """Whether a multipart reply answers a takeover's read of `kind`
        ('flows' or 'groups')."""
        purpose = self._requests.get((msg.datapath.id, msg.xid))
        return adoption_mod.READ_PURPOSES.get(purpose) == kind

    def take_read(self, msg, kind):
        """A multipart reply of `kind` ('flows' or 'groups'): taken, and
        True, if it answers a takeover's read; else False (someone else's
        request)."""
        if not self.is_read(msg, kind):
            return False
        self.on_read(msg, kind)
        return True

    def on_read(self, msg, kind):
        """Part of a takeover read's reply; the last one makes us MASTER."""
        datapath = msg.datapath
        adopted = self.adoption.collect(
            msg, kind, (datapath.id, msg.xid),
            self.roles.get(datapath.id) == 'claiming')
        if adopted is None:
            return
        self.roles[datapath.id] = 'master'
        if not self.election.may_write(self._clock()):
            self.demote('the lease ran out during the takeover')
            return
        self._adopt(adopted)

    def on_read_timeout(self, ev):
        datapath = self._datapaths.get(ev.datapath_id)
        if not self.adoption.is_current(ev) or datapath is None:
            return
        LOG.warning('dpid=%#x: the switch did not report its flows and '
                    'groups within %g s; claiming it again', datapath.id,
                    adoption_mod.ADOPTION_TIMEOUT)
        self.claim(datapath)

    # Status -----------------------------------------------------------------

    def controller_status(self):
        """This controller's part in the election, for the operator."""
        election = self.election
        if election is None:
            return {'role': 'single'}
        leading = election.may_write(self._clock())
        return {
            'role': 'master' if leading else 'slave',
            'member': election.member_id,
            'group': election.group,
            'generation': election.generation,
            'seen_generation': election.seen_generation,
            'lease_left_s': round(max(0.0, election.lease_deadline
                                      - self._clock()), 3) if leading else 0,
            'members': sorted(election.members),
            'master': election.master,
            'coordination_error': election.last_error,
            'switches': {f'{dpid:#x}': role if role != 'master' or leading
                         else 'lease expired'
                         for dpid, role in sorted(self.roles.items())},
            'writes_withheld': self.withheld,
        }
