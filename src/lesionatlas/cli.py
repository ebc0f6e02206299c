"""The ``lesionatlas`` command line: thin wrappers that parse, call the library, print, return a code.

Exit codes: 0 ok, 2 unusable data or bad usage, 1 unexpected failure (a bug: please report it).
Heavy libraries (jax, matplotlib) are imported inside commands so that ``--help`` is instant.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import LesionAtlasError

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="lesionatlas",
    help="Lesion-level response and progression dynamics, organ by organ, for metastatic cancer cohorts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Lesion-level response and progression dynamics, organ by organ, for metastatic cancer cohorts."""


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    err = _console(stderr=True)
    seen = set()
    for w in caught:
        text = str(w.message)
        if text not in seen:
            seen.add(text)
            err.print(f"warning: {text}")


FormatOpt = Annotated[Optional[str], typer.Option("--format", help="Input format: tidy, monolix or sdtm (default: detected).")]
OrganMapOpt = Annotated[Optional[Path], typer.Option("--organ-map", help="CSV of extra site,organ[,match] rows.")]
IdOpt = Annotated[Optional[str], typer.Option("--id", help="Monolix: the lesion id column.")]
TimeOpt = Annotated[Optional[str], typer.Option("--time", help="Monolix: the time column (days from treatment start).")]
DvOpt = Annotated[Optional[str], typer.Option("--dv", help="Monolix: the volume column (mm3).")]
CensOpt = Annotated[Optional[str], typer.Option("--cens", help="Monolix: the censoring flag column.")]
LimitOpt = Annotated[Optional[str], typer.Option("--limit", help="Monolix: the censoring interval's lower-bound column.")]
EvaluatorOpt = Annotated[Optional[str], typer.Option("--evaluator", help="SDTM: INVESTIGATOR (default) or ACCEPTED (--ACPTFL = Y).")]


def _reader_options(id=None, time=None, dv=None, cens=None, limit=None, evaluator=None) -> dict:
    return {"id": id, "time": time, "dv": dv, "cens": cens, "limit": limit, "evaluator": evaluator}


@app.command()
def validate(
    data: Annotated[Path, typer.Argument(help="A tidy folder, a Monolix-style CSV or an SDTM folder.")],
    format: FormatOpt = None,
    organ_map: OrganMapOpt = None,
    id: IdOpt = None,
    time: TimeOpt = None,
    dv: DvOpt = None,
    cens: CensOpt = None,
    limit: LimitOpt = None,
    evaluator: EvaluatorOpt = None,
) -> None:
    """Check a dataset: exit 0 when usable (warnings listed), exit 2 listing every problem when not."""
    from .data.organs import load_organ_map
    from .data.validate import validate_cohort

    out = _console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = validate_cohort(
            data, format, organ_map=load_organ_map(organ_map),
            **_reader_options(id, time, dv, cens, limit, evaluator),
        )
    _show_warnings(caught)
    for message in report.warning_messages():
        out.print(f"warning: {message}")
    if not report.ok:
        err = _console(stderr=True)
        for _, row in report.errors.iterrows():
            err.print(f"error [{row['code']}]: {row['message']}")
        raise typer.Exit(EXIT_USAGE)
    n_warn = len(report.warnings)
    out.print(f"ok: {data} is usable ({n_warn} warning{'s' if n_warn != 1 else ''})")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of raising."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=args, prog_name="lesionatlas", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except LesionAtlasError as exc:
        _console(stderr=True).print(f"error [{exc.code}]: {exc.message}", markup=False)
        return EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        _console(stderr=True).print("aborted", markup=False)
        return 130
    except Exception as exc:
        # usage errors of the (vendored) click parser: they print themselves and carry their exit code
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code or EXIT_USAGE)
        import traceback

        traceback.print_exc()
        _console(stderr=True).print(
            f"error [unexpected]: {type(exc).__name__}: {exc} (this is a bug in lesionatlas; please report it)",
            markup=False,
        )
        return EXIT_UNEXPECTED
    return int(code) if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
