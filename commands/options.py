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
