"""`python -m entrypoints ...` is the `switchboard` command."""

from entrypoints.cli import main

main()
