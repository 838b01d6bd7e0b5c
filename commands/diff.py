"""`saeembed diff`: the concepts whose frequency differs between corpora, with statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typing_extensions import Annotated

from commands import options
from commands.ui import emit, open_inputs, user_errors
from saeembed.analysis.config import DiffConfig

_D = DiffConfig.__dataclass_fields__


def run(
    inputs: Annotated[list[str], typer.Argument(help="Two corpora or stores (A B); with --vs a target and the "
                                                     "corpora to compare it with.")],
    vs: Annotated[bool, typer.Option("--vs", help="Compare the first input with all the others: a finding must "
                                                  "differ from each of them the same way.")] = False,
    pair_on: Annotated[Optional[str], typer.Option(help="Column naming the same item in every corpus "
                                                        "(e.g. prompt_id): paired tests.")] = None,
    holdout: Annotated[Optional[float], typer.Option(help="Keep this share of the documents out of discovery "
                                                          "and report how many findings replicate on it.")] = None,
    measure: Annotated[str, typer.Option(help="frequency (documents where the latent fires) or mean "
                                              "(mean pooled activation).")] = _D["measure"].default,
    adjust_length: Annotated[bool, typer.Option(help="Compare documents of similar length only (Mantel-Haenszel "
                                                     "within --length-bands bands of token count).")] = False,
    length_bands: Annotated[int, typer.Option(help="With --adjust-length: bands of similar length.")] = 10,
    alpha: Annotated[float, typer.Option(help="Largest Benjamini-Hochberg q of a finding.")] = _D["alpha"].default,
    min_diff: Annotated[float, typer.Option(help="Smallest |difference| of a finding.")] = _D["min_diff"].default,
    top: Annotated[int, typer.Option(help="Findings shown per direction.")] = 20,
    all_rows: Annotated[bool, typer.Option("--all", help="--json / -o: every tested latent, not only "
                                                         "the findings.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="JSON lines on stdout, one finding each.")] = False,
    output: options.Output = None,
    preset: options.Preset = None,
    text_field: options.TextField = "text",
    id_field: options.IdField = "id",
    cache_dir: options.CacheDir = None,
    seed: Annotated[int, typer.Option(help="Seed of the holdout split and the examples.")] = _D["seed"].default,
    quiet: options.Quiet = False,
) -> None:
    """Which concepts are more frequent in A than in B (and the reverse), with 95% confidence intervals,
    exact tests and Benjamini-Hochberg q-values; each finding with an example from both sides."""
    from saeembed.analysis.diff import diff
    from saeembed.errors import SaeEmbedError

    with user_errors():
        if vs and len(inputs) < 2:
            raise SaeEmbedError("--vs needs a target and at least one corpus to compare it with")
        if not vs and len(inputs) != 2:
            raise SaeEmbedError(f"give two corpora to compare (got {len(inputs)}); "
                                f"use --vs to compare one with several")
        config = DiffConfig(measure=measure, alpha=alpha, min_diff=min_diff, pair_on=pair_on,  # type: ignore[arg-type]
                            holdout=holdout, length_bands=length_bands if adjust_length else None, seed=seed)
        stores = open_inputs(inputs, preset, quiet or json_out, text_field=text_field, id_field=id_field,
                             cache_dir=cache_dir)
        result = diff(stores[0], stores[1:], config, names=[_name(p) for p in inputs])
    rows = result.table if all_rows else result.findings
    emit({output: rows} if output else {}, rows, json_out, lambda: _render(result, top), quiet)


def _name(path: str) -> str:
    return Path(path).stem or path


def _render(result: Any, top: int) -> None:
    """Findings as short blocks (latent, label, the two sides, CI, q, examples): readable at any width."""
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print(_headline(result), highlight=False, soft_wrap=True)
    findings = result.findings
    if not len(findings):
        console.print("No latent differs at these thresholds.", style="yellow")
        return
    mean = result.config.measure == "mean"
    others = " / ".join(result.names[1:])
    for title, part in ((f"more in {result.names[0]}", findings.filter(findings["diff"] > 0)),
                        (f"more in {others}", findings.filter(findings["diff"] < 0))):
        if not len(part):
            continue
        console.print(f"\n[bold]{escape(title)}[/bold] ({len(part):,}, top {min(top, len(part))} by |diff|)")
        for row in part.head(top).iter_rows(named=True):
            a, b = (f"{row['mean_a']:.2f}", f"{row['mean_b']:.2f}") if mean else \
                (f"{row['freq_a']:.1%}", f"{row['freq_b']:.1%}")
            console.print(f"  [bold cyan]{row['latent']:>6}[/bold cyan]  {escape(row['label'] or '(no label)')}",
                          highlight=False)
            stats_line = (f"          {a} vs {b}{' (' + escape(row['vs']) + ')' if len(result.names) > 2 else ''}"
                          f"   diff {row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
                          f"   q {row['q']:.1e}")
            if result.replication_rate is not None:
                stats_line += "   replicated" if row["replicated"] else "   [yellow]not replicated[/yellow]"
            console.print(stats_line, highlight=False)
            if row["example_with"]:
                console.print(f"          with:    {escape(row['example_with'])}", highlight=False, overflow="fold")
            if row["example_without"]:
                console.print(f"          [dim]without: {escape(row['example_without'])}[/dim]", highlight=False,
                              overflow="fold")


def _headline(result: Any) -> str:
    config = result.config
    names = result.names
    sizes = ", ".join(f"{n} ({s:,} docs, {t:.0f} tokens each)" for n, s, t in
                      zip(names, result.sizes, result.mean_tokens))
    findings = result.findings
    up, down = int((findings["diff"] > 0).sum()), int((findings["diff"] < 0).sum())
    lines = [f"{sizes}" + (f"; paired on {config.pair_on}" + (f", {result.n_unpaired:,} rows without a partner "
                                                                 f"left out" if result.n_unpaired else "")
                           if config.pair_on else ""),
             f"{result.n_tested:,} latents tested ({config.measure}); {len(findings):,} findings at "
             f"q <= {config.alpha} and |diff| >= {config.min_diff}: {up:,} more in {names[0]}, "
             f"{down:,} more in {' / '.join(names[1:])}"]
    if config.length_bands:
        lines.append(f"differences within {config.length_bands} bands of similar length (Mantel-Haenszel); "
                     f"the frequencies shown are overall")
    elif min(result.mean_tokens) and max(result.mean_tokens) > 1.25 * min(result.mean_tokens):
        lines.append("[yellow]note:[/yellow] the corpora differ in length; with max pooling longer documents "
                     "fire more latents, so part of the difference is length (--adjust-length compares "
                     "documents of similar length)")
    if config.holdout is not None:
        rate = result.replication_rate
        lines.append(f"discovered on {', '.join(f'{s:,}' for s in result.discovery_sizes)} documents; "
                     + (f"{rate:.0%} of the findings replicate on the {config.holdout:.0%} held out"
                        if rate is not None else "nothing to replicate"))
    return "\n".join(lines)
