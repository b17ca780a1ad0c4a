"""The `workbench` command line: `registry` (subcommands registered by the packages that own
them), `argtypes` (flag values checked when parsed) and `core` (the core's subcommands and
`main`)."""
