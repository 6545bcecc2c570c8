"""What os-ken will listen on for OpenFlow, checked before it does.

os-ken opens its listeners in a hub thread. Under the native hub
`hub.TaskExit` is `Exception`, so anything that fails there -- a taken
port, an unreadable key, a certificate that does not match its key --
ends the thread without a word, and the controller runs on with no
listener. The launcher therefore works out here what os-ken will do with
its options (`os_ken.controller.controller.OpenFlowController.server_loop`)
and tries the same things first:

- with `ctl_privkey` and `ctl_cert` set, os-ken serves OpenFlow over TLS
  only, on `ofp_ssl_listen_port` (`ofp_tcp_listen_port` is then unused);
  with neither port set, on 6653 and 6633;
- without them, plain TCP on `ofp_tcp_listen_port`, or 6653 and 6633.

A problem is a `ListenError` whose message is one line naming the option.
"""

import dataclasses
import socket
import ssl

from os_ken.ofproto import ofproto_common

TLS_FILE_OPTIONS = ('ctl_privkey', 'ctl_cert', 'ca_certs')


class ListenError(Exception):
    """A listener os-ken would fail to open; one line for the user."""


@dataclasses.dataclass(frozen=True)
class Listener:
    """One OpenFlow listening socket os-ken will open."""
    option: str      # the option that names its port
    host: str
    port: int
    tls: bool

    def describe(self):
        kind = 'TLS' if self.tls else 'TCP'
        return f'{kind} {self.host}:{self.port}'


def tls_enabled(conf):
    """os-ken's own test: TLS when both the key and the certificate are set
    (to anything, even '')."""
    return conf.ctl_privkey is not None and conf.ctl_cert is not None


def listeners(conf):
    """The listeners os-ken will open, in its order."""
    host = conf.ofp_listen_host
    tls = tls_enabled(conf)
    if not conf.ofp_tcp_listen_port and not conf.ofp_ssl_listen_port:
        # os-ken's defaults: the IANA port, and the old one beside it.
        option = 'ofp_ssl_listen_port' if tls else 'ofp_tcp_listen_port'
        ports = ((ofproto_common.OFP_SSL_PORT, ofproto_common.OFP_SSL_PORT_OLD)
                 if tls else (ofproto_common.OFP_TCP_PORT,
                              ofproto_common.OFP_TCP_PORT_OLD))
        return [Listener(option, host, port, tls) for port in ports]
    if tls:
        return [Listener('ofp_ssl_listen_port', host,
                         conf.ofp_ssl_listen_port, True)]
    return [Listener('ofp_tcp_listen_port', host, conf.ofp_tcp_listen_port,
                     False)]


def check_options(conf):
    """The TLS options and files, as os-ken would use them; no socket.

    Raises ListenError.
    """
    if conf.ciphers is not None:
        # os-ken 4 passes `ciphers` to SSLContext.wrap_socket(), which takes
        # no such argument: every accepted connection raises TypeError in
        # its own hub thread, silently, before the handshake, and the
        # switch's ClientHello is never answered.
        raise ListenError(
            f'[DEFAULT] ciphers: {conf.ciphers!r} cannot be applied: os-ken '
            'passes it to SSLContext.wrap_socket(), which does not accept '
            'it, so every TLS handshake would hang; leave ciphers unset '
            "(Python's default cipher list, TLS 1.2 or newer)")
    if (conf.ctl_privkey is None) != (conf.ctl_cert is None):
        given, missing = (('ctl_privkey', 'ctl_cert')
                          if conf.ctl_cert is None
                          else ('ctl_cert', 'ctl_privkey'))
        raise ListenError(
            f'[DEFAULT] {missing}: not set, but {given} is: OpenFlow over '
            f'TLS needs both (with only one, os-ken serves plain TCP)')
    if not tls_enabled(conf):
        if conf.ca_certs is not None:
            raise ListenError(
                '[DEFAULT] ca_certs: set, but ctl_privkey and ctl_cert are '
                'not: os-ken would serve plain TCP and ignore it')
        if conf.ofp_ssl_listen_port and not conf.ofp_tcp_listen_port:
            raise ListenError(
                '[DEFAULT] ofp_ssl_listen_port: set, but ctl_privkey and '
                'ctl_cert are not: os-ken would serve plain TCP on '
                'ofp_tcp_listen_port, which is not set, and so listen on '
                'nothing')
        return
    if conf.ofp_tcp_listen_port and not conf.ofp_ssl_listen_port:
        raise ListenError(
            '[DEFAULT] ofp_ssl_listen_port: not set, but '
            'ofp_tcp_listen_port is: with ctl_privkey and ctl_cert os-ken '
            'listens only on ofp_ssl_listen_port, so it would listen on '
            'nothing')
    for option in TLS_FILE_OPTIONS:
        path = getattr(conf, option)
        if path is None:
            continue
        if not path:
            raise ListenError(f'[DEFAULT] {option}: empty; name a PEM file')
        try:
            with open(path, 'rb') as f:
                f.read(1)
        except OSError as exc:
            raise ListenError(f'[DEFAULT] {option}: cannot read {path}: '
                              f'{exc.strerror}') from None
    _check_certificates(conf.ctl_cert, conf.ctl_privkey, conf.ca_certs)


def _check_certificates(cert, key, ca_certs):
    """Load them into an SSLContext as os-ken's StreamServer does."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A verify store accepts certificates only: a first, clearer
        # check of the certificate file than load_cert_chain's "PEM lib".
        probe.load_verify_locations(cert)
    except ssl.SSLError as exc:
        raise ListenError(f'[DEFAULT] ctl_cert: {cert} holds no PEM '
                          f'certificate ({_reason(exc)})') from None
    asked = []

    def password():
        asked.append(True)
        return b''    # never OpenSSL's terminal prompt

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=password)
    except ssl.SSLError as exc:
        if asked:
            raise ListenError(
                f'[DEFAULT] ctl_privkey: {key} is encrypted, and os-ken '
                'cannot ask for its passphrase; use an unencrypted key '
                "readable only by the controller's user") from None
        if exc.reason == 'KEY_VALUES_MISMATCH':
            raise ListenError(f'[DEFAULT] ctl_privkey: {key} is not the '
                              f'private key of ctl_cert {cert}') from None
        raise ListenError(f'[DEFAULT] ctl_privkey: {key} holds no PEM '
                          f'private key ({_reason(exc)})') from None
    if ca_certs is not None:
        try:
            context.load_verify_locations(ca_certs)
        except ssl.SSLError as exc:
            raise ListenError(f'[DEFAULT] ca_certs: {ca_certs} holds no PEM '
                              f'CA certificate ({_reason(exc)})') from None


def _reason(exc):
    if not exc.reason:
        return 'OpenSSL cannot read it'    # its reason is only "PEM lib"
    return exc.reason.replace('_', ' ').lower()


def check_free(planned):
    """Fail now if a port we are about to listen on is taken.

    os-ken would only fail later, in a thread, silently.
    """
    for listener in planned:
        family = socket.AF_INET6 if ':' in listener.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((listener.host, listener.port))
        except OSError as exc:
            raise ListenError(
                f'[DEFAULT] {listener.option}: cannot listen on '
                f'{listener.host}:{listener.port}: {exc.strerror}') from None
        finally:
            sock.close()


def warnings(conf):
    """What works but an operator should know: lines for the start log."""
    found = []
    if not tls_enabled(conf):
        return found
    if conf.ofp_tcp_listen_port and conf.ofp_ssl_listen_port:
        found.append(f'ofp_tcp_listen_port {conf.ofp_tcp_listen_port} is '
                     'not listened on: with ctl_privkey and ctl_cert os-ken '
                     'serves OpenFlow over TLS only')
    if conf.ca_certs is None:
        found.append('ca_certs is not set: any switch may connect over TLS, '
                     'its certificate unchecked')
    return found
