"""The ``difftrt`` command line: one module per command, each a thin wrapper over the library.

This is the only place where library errors (``DifftrtError``) and click's usage errors become one
``error: ...`` line on stderr and an exit code (2 for bad arguments, 1 otherwise); never a traceback.
Importing it has no side effects: the offline defaults are applied when a command runs.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from difftrt import __version__
from difftrt.errors import DifftrtError
from difftrt.offline import apply_offline_defaults


def _usage_line(exc: click.ClickException) -> str:
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return f"error: {message}"


class _Group(click.Group):
    """Turns ``DifftrtError`` and click's own errors into one ``error: message`` line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DifftrtError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            if not standalone_mode:
                raise
            click.echo(_usage_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            if not standalone_mode:
                raise
            click.echo("error: aborted", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)  # click returns an Exit's code (--help, ctx.exit) as rv


@click.group("difftrt", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="difftrt")
def main() -> None:
    """Fast diffusion sampling on exported engines.

    \b
      difftrt sample --prompt "a large red circle on the left on a white background"
      difftrt init-checkpoint --out ckpt/tiny --preset tiny
      difftrt export --ckpt ckpt/tiny --out export/tiny
      difftrt build --export export/tiny --out engines/tiny --arch sm86
      difftrt sample --engine export/tiny --prompt "a red circle" --out out.png
      difftrt bench --engine export/tiny
    """
    apply_offline_defaults()  # before anything loads onnxruntime or a hub library


def _register() -> None:
    from difftrt.cli import bench, build, export, sample, serve, train

    for module in (sample, export, build, bench, serve, train):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
