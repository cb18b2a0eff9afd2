"""The control protocol, shared by the daemon and the CLI (stdlib only: the CLI stays fast)."""
