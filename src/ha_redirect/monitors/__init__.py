"""Health monitors: pure objects that turn switch events and time into
verdicts on whether a server can take new connections."""
