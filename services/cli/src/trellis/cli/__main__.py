"""The `trellis` console script: dispatches to the services' own commands, nothing more.

`trellis ingest serve` runs `python -m trellis.ingest serve`, and so on for every service.
"""

from __future__ import annotations

import importlib
import sys

import typer

SERVICES = {
    "ingest": "validated, authenticated, idempotent ingest (serve, load)",
    "mastery": "knowledge tracing worker and read API (worker)",
    "recommender": "next activities, learning paths, groups (serve)",
    "reporting": "ClickHouse sink and reports (serve)",
    "simulator": "synthetic district and load generator (generate, load)",
}

app = typer.Typer(help="Trellis: an event-sourced personalization backend.", no_args_is_help=True)


def _dispatcher(service: str) -> None:
    @app.command(
        name=service,
        help=SERVICES[service],
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def dispatch(context: typer.Context) -> None:
        sys.argv = [f"trellis {service}", *context.args]
        importlib.import_module(f"trellis.{service}.__main__").main()


for _service in SERVICES:
    _dispatcher(_service)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
