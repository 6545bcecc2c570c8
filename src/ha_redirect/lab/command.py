"""What the lab's command-line tools share: one-line argument errors, the
argument types they check values with, the command as the user typed it,
and SIGTERM turned into a clean stop."""

import argparse
import logging
import os
import sys

from ha_redirect.lab import schemes
from ha_redirect.lab import scope as scope_mod


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2, no usage dump."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def positive(kind, what=None, zero=False):
    """An argument type: a `kind` (int or float) above zero (or zero
    too, with `zero`); the error calls it `what` (default: the type's
    name)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f'{text!r} is not a {"" if zero else "positive "}'
                f'{what or kind.__name__}{" (0 or more)" if zero else ""}')
        return value
    return parse


def positive_numbers(text):
    """An argument type: a comma-separated list of positive numbers."""
    try:
        values = tuple(float(v) for v in text.split(',') if v.strip())
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a comma-separated list of positive numbers')
    return values


def scheme_names(unique=False):
    """An argument type: comma-separated scheme names (a tuple), each one
    `schemes.Scheme` knows; `unique` drops repeats."""
    def parse(text):
        names = (s.strip() for s in text.split(','))
        names = tuple(n for n in names if n)
        if unique:
            names = tuple(dict.fromkeys(names))
        if not names:
            raise argparse.ArgumentTypeError('no scheme given')
        for name in names:
            try:
                schemes.Scheme.parse(name)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        return names
    return parse


def command_line(module, script):
    """The command that is running, as a user would type it again."""
    program = os.path.basename(sys.argv[0])
    if program in (script, '__main__.py', '-c'):
        program = f'python -m {module}'
    elif program == 'cli.py':
        program = 'ha-redirect-lab'
    return ' '.join([program] + sys.argv[1:])


def raise_terminated(signum, frame):
    """A SIGTERM handler: unwind like Ctrl-C, so every RunScope cleans up."""
    raise scope_mod.Terminated(f'terminated by signal {signum}')


def finish(tool, results, elapsed, path, what, interrupted):
    """Say how a sweep went; its exit status (130 when interrupted, 1 when
    every run failed)."""
    failed = sum(1 for r in results if r['status'] != 'ok')
    print(f'{tool}: {len(results) - failed}/{len(results)} runs ok in '
          f'{elapsed:.0f}s; {what}: {path}', file=sys.stderr)
    if interrupted:
        print(f'{tool}: interrupted; the host is clean and the {what} is '
              'partial', file=sys.stderr)
        return 130
    return 0 if results and failed < len(results) else 1


def main(module, description, add_arguments, run, argv=None):
    """`python -m module`: parse with one-line errors, set up logging, run."""
    parser = add_arguments(OneLineParser(prog=f'python -m {module}',
                                         description=description))
    parser.add_argument('--debug', action='store_true')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else
                        logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    return run(args)
