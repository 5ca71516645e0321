"""The command line: one `multitoken` script whose subcommands are thin wrappers over the library."""
