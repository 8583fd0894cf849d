"""``python -m latlab`` runs the CLI."""

from latlab.cli import main

main()
