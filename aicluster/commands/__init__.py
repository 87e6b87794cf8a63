"""Subcommands of `aicluster`, one module each; aicluster/cli.py registers them on the group."""
