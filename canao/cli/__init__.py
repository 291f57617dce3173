"""The ``canao`` command line: parse, call the library, print; a CanaoError is exit code 2.

Commands live by concern in this package's modules; importing them registers them on the
one ``cli`` group. Nothing here imports torch or TVM until a command needs them.
"""

from __future__ import annotations

import click

from canao.cli import _read, _search, _serve, _tuning  # noqa: F401  (register the commands)
from canao.cli._base import cli
from canao.errors import CanaoError

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for any user error)."""
    try:
        cli.main(args=argv, prog_name="canao", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        # click turns a KeyboardInterrupt into Abort; SIGTERM's is told apart by its type.
        from canao.study import Terminated

        if isinstance(e, Terminated) or isinstance(e.__cause__, Terminated):
            click.echo("canao: terminated (SIGTERM); the running trial was failed", err=True)
            return 143
        click.echo("canao: interrupted", err=True)
        return 130
    except CanaoError as e:
        click.echo(f"canao: error: {e}", err=True)
        return 2
    return 0
