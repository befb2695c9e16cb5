"""The command line's settings: one table for --help, the TOML file and the environment."""
