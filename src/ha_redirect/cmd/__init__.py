"""Command-line launchers: `ha-redirect-controller` and `osken-manager`."""
