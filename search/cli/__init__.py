"""The `nar` command line: `app` wires the sub-commands, one module each, together."""
