"""`python -m switchboard ...` is the `switchboard` command."""

from switchboard.cli import main

main()
