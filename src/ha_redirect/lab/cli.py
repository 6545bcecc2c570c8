"""ha-redirect-lab: the Mininet testbed from the command line.

    ha-redirect-lab demo [--schemes sdn-reactive,haproxy-tuned,...]
    ha-redirect-lab evaluate [...]   (ha_redirect.lab.evaluation, when present)
    ha-redirect-lab gaps [...]       (ha_redirect.lab.gaps, when present)

Needs root.  Errors are one line on stderr with a non-zero exit status.
"""

import importlib
import importlib.util
import logging
import sys

from ha_redirect.lab import command
from ha_redirect.lab import scope as scope_mod

# The libraries of the `[lab]` extra. Without them the testbed cannot be
# imported, and `main` says in one line how to install them rather than
# letting a traceback out.
LAB_EXTRA = ('mininet', 'dpkt', 'matplotlib', 'tqdm')
INSTALL_HINT = ("pip install 'ha_redirect[lab]', or '.[lab]' from a source "
                "tree")
missing_extra = None    # a [lab] library this module failed to import


def _lab_library(exc):
    """Whether a ModuleNotFoundError is about a library of the extra."""
    return (exc.name or '').partition('.')[0] in LAB_EXTRA


def _lab_module(name):
    """ha_redirect.lab.<name>, or None when it cannot be imported for want
    of a [lab] library (noted in `missing_extra`) or is not there."""
    global missing_extra
    try:
        return importlib.import_module(f'ha_redirect.lab.{name}')
    except ModuleNotFoundError as exc:
        if exc.name != f'ha_redirect.lab.{name}':
            if not _lab_library(exc):
                raise
            missing_extra = missing_extra or exc.name.partition('.')[0]
        return None


demo_mod = _lab_module('demo')
testbed = _lab_module('testbed')
evaluation = _lab_module('evaluation')
gaps = _lab_module('gaps')

_Parser = command.OneLineParser


def build_parser():
    parser = _Parser(prog='ha-redirect-lab',
                     description='The paper\'s Figure 1 testbed in Mininet.')
    parser.add_argument('--debug', action='store_true',
                        help='log what the testbed does')
    sub = parser.add_subparsers(dest='command', required=True,
                                parser_class=_Parser)
    p = sub.add_parser('demo', help='a short failover per scheme, told as '
                       'it happens')
    p.add_argument('--schemes', type=command.scheme_names(),
                   default=list(demo_mod.DEFAULT_SCHEMES),
                   help='comma-separated: sdn-<strategy>, haproxy-paper, '
                   'haproxy-tuned (default: %(default)s)')
    number = command.positive(float, 'number')
    p.add_argument('--observe', type=number, default=2.0,
                   help='seconds to keep probing after the failure')
    p.add_argument('--interval-ms', type=number, default=5.0,
                   help='a new connection every this many ms')
    p.add_argument('--failure', choices=demo_mod.FAILURES, default='link',
                   help='link: the primary\'s interface goes down (as in '
                   'the paper); kill: its server process dies, link up')
    p.add_argument('--keep', action='store_true',
                   help='keep the run\'s working directory (logs, configs)')
    if evaluation is not None:
        p = sub.add_parser('evaluate', help='the paper\'s Figures 2-4: '
                           'schemes x arrival rates, report and figures')
        evaluation.add_arguments(p)
    if gaps is not None:
        p = sub.add_parser('gaps', help='every scheme\'s service gap under '
                           'a 5 ms prober and failback survivors, side by '
                           'side')
        gaps.add_arguments(p)
    return parser


def demo(args):
    testbed.check_host()
    demo_mod.say(f'datapath: {testbed.choose_datapath()}')
    results = []
    for scheme in args.schemes:
        results.append(demo_mod.run_scheme(
            scheme, observe=args.observe, interval_ms=args.interval_ms,
            keep_workdir=args.keep, failure=args.failure))
    demo_mod.say()
    for line in demo_mod.summary_lines(results):
        demo_mod.say(line)
    return 0


def missing_lab_libraries():
    """The libraries of the `[lab]` extra that cannot be imported."""
    missing = [name for name in LAB_EXTRA
               if importlib.util.find_spec(name) is None]
    if missing_extra and missing_extra not in missing:
        missing.append(missing_extra)
    return missing


def main(argv=None):
    missing = missing_lab_libraries()
    if missing:
        print(f'ha-redirect-lab: error: the testbed needs the [lab] extra '
              f'({", ".join(missing)} not installed): {INSTALL_HINT}',
              file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else
                        logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        if args.command == 'evaluate':
            return evaluation.run(args)
        if args.command == 'gaps':
            return gaps.run(args)
        return demo(args)
    except scope_mod.LabError as exc:
        print(f'ha-redirect-lab: error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('ha-redirect-lab: interrupted; cleaned up', file=sys.stderr)
        return 130
    except scope_mod.Terminated as exc:
        print(f'ha-redirect-lab: {exc}; cleaned up', file=sys.stderr)
        return 143


if __name__ == '__main__':
    sys.exit(main())
