"""The typer application every command module adds itself to."""

import typer

app = typer.Typer(
    name="polyemo",
    help="Multilingual speech emotion recognition: prepare corpora, extract features, train, benchmark, predict, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
