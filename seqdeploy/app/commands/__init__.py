"""One module per CLI command; each registers itself on `seqdeploy.app.cli.app`."""
