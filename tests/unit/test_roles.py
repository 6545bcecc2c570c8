"""The app's roles and takeover read, at the edges test_takeover leaves:
election news, a read refused or never answered, a lease lost meanwhile."""

import logging

import pytest

from os_ken.controller import ofp_event
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ha_redirect import app as app_mod
from ha_redirect import model
from ha_redirect.policy import RedirectPolicy

from os_ken_fakes import RecordingDatapath

PRIMARY = model.Endpoint('10.0.0.1', '00:00:00:00:00:01', 1)
BACKUP = model.Endpoint('10.0.0.2', '00:00:00:00:00:02', 2)
WEB = model.Service('web', 1, (5001,), PRIMARY, (BACKUP,))


class Election:
    """Leads (generation 7) until told otherwise."""
    member_id, group, members, master, last_error = 'me', 'g', {}, '', ''
    seen_generation, lease_deadline = 0, 0.0

    def __init__(self, leading=True):
        self.leading = leading
        self.generation = 7 if leading else None
        self.resigned = []

    def may_write(self, now=None):
        return self.leading

    def resign(self, why):
        self.leading, self.generation = False, None
        self.resigned.append(why)

    def note_switch_generation(self, generation):
        pass


@pytest.fixture
def timers(monkeypatch):
    """The app's timers, held instead of started: (delay, event)."""
    held = []
    monkeypatch.setattr(app_mod.hub, 'spawn_after',
                        lambda delay, send, name, ev: held.append((delay, ev)))
    return held


def ha_app(leading=True):
    election = Election(leading)
    app = app_mod.RedirectApp(redirect_policy=RedirectPolicy(
        [WEB], model.PolicySettings(strategy='proactive')), election=election)
    return app, election


def connect(app, datapath):
    reply = parser.OFPPortDescStatsReply(datapath)
    reply.flags, reply.body = 0, [parser.OFPPort(
        n, f'00:00:00:00:aa:{n:02x}', f'p{n}', 0, 0, 0, 0, 0, 0, 0, 0)
        for n in (1, 2, 3)]
    app.on_port_desc(ofp_event.EventOFPPortDescStatsReply(reply))


def answer_master(app, datapath):
    [request] = [m for m in datapath.sent
                 if isinstance(m, parser.OFPRoleRequest)][-1:]
    reply = parser.OFPRoleReply(datapath, ofp.OFPCR_ROLE_MASTER, 7)
    reply.xid = request.xid
    app.on_role_reply(ofp_event.EventOFPRoleReply(reply))


def reads(datapath):
    return [m for m in datapath.sent
            if isinstance(m, (parser.OFPFlowStatsRequest,
                              parser.OFPGroupDescStatsRequest))]


def answer_empty(app, datapath, request):
    if isinstance(request, parser.OFPFlowStatsRequest):
        reply, handle = parser.OFPFlowStatsReply(datapath), app.on_flow_stats
        event = ofp_event.EventOFPFlowStatsReply
    else:
        reply, handle = (parser.OFPGroupDescStatsReply(datapath),
                         app.on_group_desc)
        event = ofp_event.EventOFPGroupDescStatsReply
    reply.xid, reply.flags, reply.body = request.xid, 0, []
    handle(event(reply))


def roles_asked(datapath):
    return [m.role for m in datapath.sent
            if isinstance(m, parser.OFPRoleRequest)]


def test_an_unanswered_read_claims_the_switch_again(timers, caplog):
    app, _ = ha_app()
    datapath = RecordingDatapath()
    connect(app, datapath)
    answer_master(app, datapath)
    [(delay, timeout)] = timers
    assert delay == app_mod.ADOPTION_TIMEOUT
    with caplog.at_level(logging.WARNING, logger='ha_redirect.app'):
        app.on_adoption_timeout(timeout)
    assert 'claiming it again' in caplog.text
    assert roles_asked(datapath) == [ofp.OFPCR_ROLE_MASTER] * 2
    # The first read's timer, firing late, is not the second read's.
    answer_master(app, datapath)
    caplog.clear()
    app.on_adoption_timeout(timeout)
    assert 'claiming it again' not in caplog.text


def test_a_refused_read_takes_over_without_it():
    app, _ = ha_app()
    datapath = RecordingDatapath()
    connect(app, datapath)
    answer_master(app, datapath)
    flows, groups = reads(datapath)
    error = parser.OFPErrorMsg(datapath, ofp.OFPET_BAD_REQUEST,
                               ofp.OFPBRC_BAD_MULTIPART, b'')
    error.xid = flows.xid
    app.on_switch_error(ofp_event.EventOFPErrorMsg(error))
    assert not datapath.flow_mods()
    answer_empty(app, datapath, groups)
    assert datapath.flow_mods(ofp.OFPFC_ADD)
    assert app._roles == {1: 'master'}


def test_a_lease_lost_during_the_read_writes_nothing():
    app, election = ha_app()
    datapath = RecordingDatapath()
    connect(app, datapath)
    answer_master(app, datapath)
    election.leading = False
    for request in reads(datapath):
        answer_empty(app, datapath, request)
    assert not datapath.flow_mods()
    assert election.resigned == ['the lease ran out during the takeover']
    assert app._roles == {1: 'slave'}


def test_elected_claims_every_switch_and_lost_yields_them():
    app, election = ha_app(leading=False)
    switches = [RecordingDatapath(1), RecordingDatapath(2)]
    for datapath in switches:
        connect(app, datapath)
    election.leading, election.generation = True, 7
    app.on_leadership(app_mod.EventLeadership('elected', 7))
    assert app._roles == {1: 'claiming', 2: 'claiming'}
    app.on_leadership(app_mod.EventLeadership('lost', 'lease expired'))
    assert election.resigned == ['lease expired']
    assert app._roles == {1: 'slave', 2: 'slave'}
    for datapath in switches:
        assert roles_asked(datapath)[-1] == ofp.OFPCR_ROLE_NOCHANGE


def test_a_slave_counts_the_writes_it_withholds():
    app, _ = ha_app(leading=False)
    datapath = RecordingDatapath()
    connect(app, datapath)
    app._send(datapath, [model.Barrier(1), model.Barrier(1)])
    assert app._status(None)['controller']['writes_withheld'] == 2
    assert not [m for m in datapath.sent
                if isinstance(m, parser.OFPBarrierRequest)]


def test_only_the_replies_to_the_takeover_read_are_taken_as_it():
    app, _ = ha_app()
    datapath = RecordingDatapath()
    connect(app, datapath)
    answer_master(app, datapath)
    flows, groups = reads(datapath)
    roles = app._switch_roles

    def reply(cls, xid):
        message = cls(datapath)
        message.xid, message.flags, message.body = xid, 0, []
        return message
    # Someone else's flow statistics (an operator's status), and a reply
    # of the other kind, are left alone.
    assert not roles.take_read(reply(parser.OFPFlowStatsReply,
                                     flows.xid + 1000), 'flows')
    assert not roles.take_read(reply(parser.OFPGroupDescStatsReply,
                                     flows.xid), 'groups')
    assert app._roles == {1: 'claiming'}
    assert roles.take_read(reply(parser.OFPFlowStatsReply, flows.xid),
                           'flows')
    assert roles.take_read(reply(parser.OFPGroupDescStatsReply, groups.xid),
                           'groups')
    assert app._roles == {1: 'master'}
