"""Options shared by the analysis commands (diff, correlations, ...), declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from saeembed.analysis.config import SearchConfig

Preset = Annotated[Optional[str], typer.Option(help="Embed corpus files with this preset (default: the offline one).")]
TextField = Annotated[str, typer.Option(help="Corpus files: field holding the text.")]
IdField = Annotated[str, typer.Option(help="Corpus files: field holding the id.")]
CacheDir = Annotated[Optional[Path], typer.Option(help="Vector cache folder.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the table to .csv, .parquet, .json "
                                                                       "or .jsonl.")]
# One meaning per option everywhere: --top = rows shown, --concept-latents = latents kept per phrase or
# example of a concept query, --clusters = number of clusters.
CONCEPT_LATENTS = SearchConfig.k  # the paper's k: latents per phrase or example
ConceptLatents = Annotated[int, typer.Option("--concept-latents", min=1,
                                             help="Latents kept per phrase or example of the concept query.")]
Json = Annotated[bool, typer.Option("--json", help="JSON lines on stdout, one row each.")]
SummaryJson = Annotated[bool, typer.Option("--json", help="JSON lines on stdout: the summary record "
                                                          "(`type: summary`), then one row each.")]

# Where the work on a store's parts runs (diff, correlations, search): `saeembed.stream.StoreStream`.
Engine = Annotated[str, typer.Option("--engine",
                                     help="Where the work on a store's parts runs: local (this process; a folder "
                                          "store is read part by part) or ray (Ray tasks, one per part, on a local "
                                          "Ray or the cluster at --ray-address; stores only).")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="The Ray cluster for --engine ray "
                                                                         "(HOST:PORT, ray://HOST:PORT or auto); "
                                                                         "default: a Ray started on this machine.")]

Html = Annotated[Optional[Path], typer.Option("--html", help="Also write a self-contained HTML report here (plots "
                                                           "and highlighted evidence; opens offline).")]


def setting(config: type, name: str, *decls: str, **extra: Any) -> Any:
    """The option that sets `config.name`: its default, and its help from the field's docstring
    (`saeembed.settings`): the library's declaration is the one place either is written. Its limits are
    checked when the config is built, naming the field and this option."""
    from saeembed.settings import field_default, field_help

    default = field_default(config, name)
    return typer.Option(default, *_switch(decls, default), help=field_help(config, name), **extra)


def _switch(decls: tuple[str, ...], default: object) -> tuple[str, ...]:
    """A true/false setting is a pair of flags (`--dense/--no-dense`), so a script can say either."""
    if isinstance(default, bool) and decls and "/" not in decls[0] and decls[0].startswith("--"):
        return (f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:])
    return decls


def preset_setting(config: type, name: str, *decls: str, **extra: Any) -> Any:
    """The option that sets `config.name` where a preset may set it too (`saeembed embed`): unset (None), the
    field keeps the preset's value, else its declared default, which the help names. Help from the field's
    docstring, as `setting`."""
    from saeembed.settings import field_default, field_help

    default = field_default(config, name)
    shown = "" if default is None or isinstance(default, bool) else f" Default: {default}, or the preset's."
    return typer.Option(False if isinstance(default, bool) else None, *_switch(decls, default),
                        help=field_help(config, name) + shown, **extra)
