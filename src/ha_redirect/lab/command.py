"""What the lab's command-line tools share: one-line argument errors, the
command as the user typed it, and SIGTERM turned into a clean stop."""

import argparse
import os
import sys

from ha_redirect.lab import scope as scope_mod


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2, no usage dump."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


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
