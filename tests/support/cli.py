"""The command line as a user types it, in-process (typer's CliRunner over ``cli.app``)."""

from __future__ import annotations

from typer.testing import CliRunner, Result


def run_cli(*args: object) -> Result:
    """``text4d ARGS``: the runner's result (exit code, output, and the exception if one escaped)."""
    from cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def invoke(*args: object) -> tuple[int, str]:
    """``text4d ARGS``: (exit code, output); an exception other than the exit is raised, traceback and all."""
    result = run_cli(*args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output
