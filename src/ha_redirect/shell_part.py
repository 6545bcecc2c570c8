"""The base of the os-ken shell's collaborators (`ha_redirect.roles`,
`ha_redirect.operator_requests`): plain objects that each do one job of
`ha_redirect.app`, with what the shell hands them."""


class ShellPart:
    """One job of the shell, done on its event thread (the only thread that
    touches the policy). It is handed the policy, the shell's clock, its
    table of live switches (dpid -> datapath), kept current by the shell,
    and a timer: `post_later(delay, event)` delivers `event` to the shell
    after `delay` seconds."""

    def __init__(self, policy, clock, datapaths, post_later):
        self._policy = policy
        self._clock = clock
        self._datapaths = datapaths
        self._post_later = post_later
