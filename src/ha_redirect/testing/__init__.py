"""Test helpers for ha_redirect and for controllers that embed it.

`FakeFlowTable` runs the flow data a `RedirectPolicy` returns, so tests can
assert what happens to packets rather than what the flows look like. It
imports nothing from os-ken.
"""

from ha_redirect.testing import fake_flow_table

CONTROLLER = fake_flow_table.CONTROLLER
NORMAL = fake_flow_table.NORMAL
Delivery = fake_flow_table.Delivery
FakeFlowTable = fake_flow_table.FakeFlowTable
FakeFlowTableError = fake_flow_table.FakeFlowTableError
FlowEntry = fake_flow_table.FlowEntry
FlowRemoved = fake_flow_table.FlowRemoved

__all__ = ['CONTROLLER', 'NORMAL', 'Delivery', 'FakeFlowTable',
           'FakeFlowTableError', 'FlowEntry', 'FlowRemoved']
