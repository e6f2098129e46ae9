"""The `weir` command line."""

from __future__ import annotations

import sys
from typing import Any

import click

from weir import __version__
from weir.cli._common import fail
from weir.errors import WeirError


class WeirGroup(click.Group):
    """Print Weir errors as one readable line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WeirError as exc:
            fail(str(exc))
        except TimeoutError as exc:
            fail(str(exc) or "timed out", code=2)
        except KeyboardInterrupt:
            sys.exit(130)


@click.group(
    cls=WeirGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="weir")
def cli() -> None:
    """Weir: DAGs of Python tasks, run by a gRPC control plane and stateless workers.

    Start everything on one machine with `weir standalone`, or run the parts:
    `weir server`, `weir worker`. Talk to a server with `weir dags ...`,
    `weir runs ...` and `weir tasks ...`.
    """


def _register() -> None:
    from weir.cli import config_cmd, dags, db, processes, runs, tasks

    for module in (processes, dags, runs, tasks, db, config_cmd):
        module.register(cli)


_register()


def main() -> None:
    cli(prog_name="weir")
