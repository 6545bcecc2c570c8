"""Redirect strategies, loaded by name from the `ha_redirect.strategies`
stevedore namespace (see `ha_redirect.plugins`)."""
