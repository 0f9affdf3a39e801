"""One module per CLI command; each registers itself on `seqdeploy.cli.app`."""
