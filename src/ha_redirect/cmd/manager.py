"""osken-manager: run os-ken apps by name, as os-ken 3's command did.

    osken-manager --config-file F [--app-lists a,b] [app ...]

An app is a short name from the `os_ken.apps` entry-point namespace
(`ha_redirect`) or a module path (`os_ken.app.simple_switch_13` style).
With no app given it runs `ha_redirect`, the app this package provides;
os-ken 4 ships no sample apps to default to. The ha_redirect configuration
is validated when that app runs or when the files have an [ha_redirect]
section.
"""

import sys

from os_ken import cfg as osken_cfg

from ha_redirect.cmd import launcher

DESCRIPTION = 'Run os-ken applications (os-ken 4 no longer ships this tool).'

CLI_OPTS = [
    osken_cfg.ListOpt('app-lists', default=[],
                      help='Comma-separated names of apps to run.'),
    osken_cfg.MultiStrOpt('app', positional=True, default=[],
                          help='Names of apps to run: os_ken.apps entry '
                               'points or module paths (default: '
                               f'{launcher.HA_REDIRECT_APP}).'),
]


def _app_names(conf):
    return list(conf.app_lists) + list(conf.app) or [launcher.HA_REDIRECT_APP]


def main(argv=None):
    launcher.run(sys.argv[1:] if argv is None else argv,
                 prog='osken-manager',
                 description=DESCRIPTION,
                 app_names_from_conf=_app_names,
                 register_cli_opts=CLI_OPTS)


if __name__ == '__main__':
    main()
