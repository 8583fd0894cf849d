"""The CLI as the tests call it: in-process, exit code and captured output."""

from __future__ import annotations

from latlab.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``latlab ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
