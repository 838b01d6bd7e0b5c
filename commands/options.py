"""Options shared by the analysis commands (diff, correlations, ...), declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

Preset = Annotated[Optional[str], typer.Option(help="Embed corpus files with this preset (default: the offline one).")]
TextField = Annotated[str, typer.Option(help="Corpus files: field holding the text.")]
IdField = Annotated[str, typer.Option(help="Corpus files: field holding the id.")]
CacheDir = Annotated[Optional[Path], typer.Option(help="Vector cache folder.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="Write the table to .csv, .parquet, .json "
                                                                       "or .jsonl.")]
# One meaning per option everywhere: --top = rows shown, --concept-latents = latents kept per phrase or
# example of a concept query, --clusters = number of clusters.
CONCEPT_LATENTS = 100  # the paper's k: latents per phrase or example
SEARCH_FEEDBACK = 20  # saeembed.analysis.search.FEEDBACK_DOCS (a test holds them equal; importing it here would
# load numpy for every command's --help)
ConceptLatents = Annotated[int, typer.Option("--concept-latents", min=1,
                                             help="Latents kept per phrase or example of the concept query.")]
Json = Annotated[bool, typer.Option("--json", help="JSON lines on stdout, one row each.")]

Html = Annotated[Optional[Path], typer.Option("--html", help="Also write a self-contained HTML report here (plots "
                                                           "and highlighted evidence; opens offline).")]
