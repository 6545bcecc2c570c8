"""ha-redirect-ctl: ask a running controller about, or change, its services.

    ha-redirect-ctl [--socket PATH] status
    ha-redirect-ctl [--socket PATH] drain SERVICE SERVER
    ha-redirect-ctl [--socket PATH] undrain SERVICE SERVER

SERVER is `primary`, `backupN` or the server's IP. A drained server takes no
new connections; the ones it has continue until they end, and `status`
shows how many are still open (where the strategy pins connections in
flows). Talks to the controller's control socket ([ha_redirect]
control_socket, /run/ha_redirect/control.sock by default).
"""

import argparse
import json
import sys

from ha_redirect import control

DEFAULT_SOCKET = '/run/ha_redirect/control.sock'


def _format_controller(controller):
    if controller.get('role', 'single') == 'single':
        return ['controller: the only one (no [coordination] backend_url)']
    lines = [f"controller {controller['member']}: {controller['role'].upper()}"
             f" in group {controller['group']}, generation "
             f"{controller['generation'] or controller['seen_generation']}"
             + (f", lease {controller['lease_left_s']:.2f} s left"
                if controller['role'] == 'master' else '')]
    if controller.get('coordination_error'):
        lines.append('  coordination error: '
                     + controller['coordination_error'])
    lines.append(f"  master: {controller['master'] or 'none known'}")
    lines.append('  members: ' + (', '.join(controller['members']) or '?'))
    for dpid, role in controller['switches'].items():
        lines.append(f'  switch {dpid}: {role}')
    return lines


def _format(answer):
    lines = _format_controller(answer.get('controller', {}))
    for service in answer['services']:
        state = 'connected' if service['connected'] else 'switch not connected'
        role = service.get('switch_role')
        if role not in (None, 'master'):
            # Only the master runs the policy: ask it.
            lines.append(f"service {service['service']} (dpid "
                         f"{service['datapath_id']:#x}, {role} here: the "
                         f"master has its state)")
            continue
        lines.append(f"service {service['service']} "
                     f"(dpid {service['datapath_id']:#x}, {state})")
        for server in service['servers']:
            flags = [word for word, on in (
                ('ACTIVE', server['active']),
                ('healthy', server['healthy']),
                ('DOWN', not server['healthy']),
                ('drained', server['drained'])) if on]
            count = server['open_connections']
            lines.append(f"  {server['name']:8s} {server['ip']:15s} "
                         f"port {server['port']:<4d} {' '.join(flags):24s}"
                         f" open connections: "
                         f"{'n/a' if count is None else count}")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='ha-redirect-ctl', description=__doc__.splitlines()[0])
    parser.add_argument('--socket', default=DEFAULT_SOCKET,
                        help=f'control socket (default {DEFAULT_SOCKET})')
    parser.add_argument('--json', action='store_true',
                        help='print the answer as JSON')
    commands = parser.add_subparsers(dest='command', required=True)
    commands.add_parser('status', help='services, servers, open connections')
    for name in ('drain', 'undrain'):
        sub = commands.add_parser(name, help=f'{name} a server')
        sub.add_argument('service')
        sub.add_argument('server', help='primary, backupN or an IP')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    message = {'command': args.command}
    if args.command != 'status':
        message.update(service=args.service, server=args.server)
    try:
        answer = control.request(args.socket, message)
    except FileNotFoundError:
        parser.exit(1, f'ha-redirect-ctl: error: no controller socket at '
                       f'{args.socket}\n')
    except (OSError, ValueError) as exc:
        parser.exit(1, f'ha-redirect-ctl: error: {args.socket}: {exc}\n')
    if answer.get('error') == 'busy':
        parser.exit(1, 'ha-redirect-ctl: error: the controller is busy with '
                       'other control clients; try again\n')
    if not answer.get('ok'):
        parser.exit(1, f"ha-redirect-ctl: error: {answer.get('error')}\n")
    print(json.dumps(answer, indent=2) if args.json else _format(answer))
    return 0


if __name__ == '__main__':
    sys.exit(main())
