"""One progress bar for long work (extraction, folds, training, prediction).

:func:`progress_bar` builds a rich :class:`~rich.progress.Progress` with polyemo's standard
columns (description, bar, done/total, elapsed) plus any extra columns a stage needs; it is
disabled (draws nothing) when ``enabled`` is false, and drawn on stderr by default so stdout
can carry results.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn


def progress_bar(*extra: ProgressColumn | str, enabled: bool = True, transient: bool = False,
                 stderr: bool = True) -> Progress:
    """``with progress_bar(TextColumn("{task.fields[status]}"), enabled=...) as bar: ...``.

    ``extra`` columns (or rich format strings) go between the counter and the elapsed time.
    """
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(c) if isinstance(c, str) else c for c in extra]
    columns.append(TimeElapsedColumn())
    return Progress(*columns, disable=not enabled, transient=transient, console=Console(stderr=stderr))
