"""ha-redirect-controller: run the ha_redirect os-ken app.

    ha-redirect-controller --config-file /etc/ha_redirect/ha_redirect.conf \
        [--ofp-listen-host H] [--ofp-tcp-listen-port N] [--pid-file F] \
        [--debug | --verbose] [--check-config] [--version]

A bad configuration is reported as one line on stderr, with exit status 2,
before anything listens; `--check-config` stops there ("ok", status 0).
SIGTERM or SIGINT stops it. OpenFlow over TLS: `--ofp-ssl-listen-port N
--ctl-privkey K --ctl-cert C --ca-certs CA` (see the launcher).
"""

import sys

from ha_redirect.cmd import launcher

DESCRIPTION = ('Keep TCP services reachable when a server fails: an OpenFlow '
               'controller that redirects their traffic to a backup.')


def main(argv=None):
    launcher.run(sys.argv[1:] if argv is None else argv,
                 prog='ha-redirect-controller',
                 description=DESCRIPTION,
                 app_names_from_conf=lambda conf: [launcher.HA_REDIRECT_APP],
                 policy_required=True)


if __name__ == '__main__':
    main()
