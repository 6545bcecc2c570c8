"""The config files as the user wrote them, for one-line diagnostics.

oslo.config ignores keys it has no option for, and does not quote a value
it rejects: `ConfigFiles` reads the files again for both, and `rejection`
says what such a value should have been.
"""

import glob
import os

from oslo_config import cfg
from oslo_config import types

from ha_redirect import model


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line."""


class ConfigFiles:
    """The raw sections of the config files `conf` read."""

    def __init__(self, conf):
        self.sections = {}
        for path in self._paths(conf):
            parsed = {}
            try:
                cfg.ConfigParser(path, parsed).parse()
            except (OSError, cfg.iniparser.ParseError):
                continue  # oslo.config itself reports unreadable files
            for section, values in parsed.items():
                merged = self.sections.setdefault(section, {})
                for key, vals in values.items():
                    merged[key] = vals[-1]

    @staticmethod
    def _paths(conf):
        paths = []
        try:
            paths.extend(conf.config_file or [])
            dirs = conf.config_dir or []
        except cfg.NoSuchOptError:
            return paths  # ConfigOpts never called: no files
        if isinstance(dirs, str):
            dirs = [dirs]
        for directory in dirs:
            paths.extend(sorted(glob.glob(os.path.join(directory, '*.conf'))))
        return paths

    def raw(self, group, name):
        return self.sections.get(group, {}).get(name)


def rejection(opt, raw):
    """What is wrong with the text `raw` that `opt` rejected:
    ``'zz' is not a MAC address`` (for a list, its first bad item)."""
    type_ = opt.type
    if isinstance(type_, types.List):
        raw = _bad_item(type_.item_type, raw)
        type_ = type_.item_type
    return f'{raw!r} is not {_expected(type_)}'


def _bad_item(item_type, raw):
    if raw is not None:
        for item in raw.split(','):
            item = item.strip()
            try:
                item_type(item)
            except ValueError:
                return item
    return raw


def _expected(type_):
    if isinstance(type_, types.IPAddress):
        return 'an IPv4 address'
    if isinstance(type_, types.String) and type_.regex is not None:
        return 'a MAC address'
    if isinstance(type_, types.Port):
        return 'a TCP port (1-65535)'
    if isinstance(type_, types.Number):
        if type_.max == model.SWITCH_PORT_MAX:
            return f'a switch port number (1-{model.SWITCH_PORT_MAX})'
        noun = 'an integer' if isinstance(type_, types.Integer) else 'a number'
        if type_.max is None:
            return f'{noun} of at least {type_.min}'
        return f'{noun} from {type_.min} to {type_.max}'
    if isinstance(type_, types.Boolean):
        return 'true or false'
    return 'valid'
