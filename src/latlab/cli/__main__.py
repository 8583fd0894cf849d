"""``python -m latlab.cli`` runs the CLI (as ``python -m latlab`` does)."""

from latlab.cli import main

if __name__ == "__main__":
    main()
