"""How `saeembed diff` reads on screen: the length gap, the counts, then the strongest themes as short
blocks (lead latent and label, the two sides, CI, q, related latents, one example each side)."""

from __future__ import annotations

from typing import Any

from commands.ui import label_markup, result_console, shown

# Characters of an example shown on screen (the files and JSON keep the whole context).
EXAMPLE_CHARS = 110
# Related labels listed under a theme's lead.
RELATED_SHOWN = 3


def render(result: Any, top: int | None) -> None:
    """Print the headline and the `top` strongest themes (every theme when None), by direction."""
    console = result_console()
    console.print(headline(result), highlight=False, soft_wrap=True)
    _render_form(console, result, top)
    if result.style is not None:
        console.print("\n[bold]How it is written[/bold] (token latents of an LLM, as rates per 1,000 tokens)",
                      highlight=False)
        _render_themes(console, result, result.style_themes, top, style=True)
    console.print("\n[bold]What it is about[/bold] (SAE latents)", highlight=False)
    _render_themes(console, result, result.themes, top, style=False)


def _render_themes(console: Any, result: Any, themes: Any, top: int | None, style: bool) -> None:
    if not len(themes):
        console.print("No latent differs at these thresholds.", style="yellow")
        return
    top_themes = themes if top is None else themes.head(top)
    more = "; --top N for more, --all for every one" if len(top_themes) < len(themes) else ""
    console.print(f"The {len(top_themes)} strongest of {len(themes):,} themes (by |diff| of the "
                  f"lead latent{more})", highlight=False)
    for name in [n for n in result.names if n in set(top_themes["more_in"])]:  # A first, as named
        part = top_themes.filter(top_themes["more_in"] == name)
        console.print(f"\n[bold]more in {shown(name)}[/bold]", highlight=False)
        for row in part.iter_rows(named=True):
            for line in _theme_block(row, result, style):
                console.print(line, highlight=False, overflow="fold")


def _render_form(console: Any, result: Any, top: int | None) -> None:
    """The form findings: what can be counted in the text, strongest first, by direction."""
    form = result.form
    if form is None:
        return
    found = result.form_findings
    console.print("\n[bold]Form[/bold] (counted in the text)", highlight=False)
    if not len(found):
        console.print(f"No counted feature differs at these thresholds ({len(form)} tested).", style="yellow")
        return
    shown_rows = found if top is None else found.head(top)
    more = "; --top N for more" if len(shown_rows) < len(found) else ""
    console.print(f"The {len(shown_rows)} strongest of {len(found)} differences ({len(form)} features tested{more})",
                  highlight=False)
    for name in result.names:
        part = shown_rows.filter(shown_rows["more_in"] == name)
        if not len(part):
            continue
        console.print(f"\n[bold]more in {shown(name)}[/bold]", highlight=False)
        for row in part.iter_rows(named=True):
            for line in _form_block(row, result):
                console.print(line, highlight=False, overflow="fold")


def _form_block(row: dict[str, Any], result: Any) -> list[str]:
    against = f" ({shown(row['vs'])})" if len(result.names) > 2 else ""
    unit = "pairs" if result.config.pair_on else "documents"
    facts = f"in {row['share_a']:.0%} vs {row['share_b']:.0%} of {unit}{against}"
    if row["rate_a"] is not None:
        facts += (f"; {row['rate_a']:.1f} vs {row['rate_b']:.1f} per 1,000 tokens, diff {row['diff']:+.1f} "
                  f"[{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]")
    else:
        facts += f", diff {row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
    facts += f"   q {row['q']:.1e}"
    if result.form_replication_rate is not None or row.get("replicated") is not None:
        facts += "   replicated" if row.get("replicated") else "   [yellow]not replicated[/yellow]"
    described = f"  [dim]{shown(row['description'])}[/dim]" if row["description"] != row["feature"] else ""
    lines = [f"  [bold cyan]{shown(row['feature'])}[/bold cyan]{described}",
             f"          {facts}"]
    if row.get("example_with"):
        lines.append(f"          with:    {shown(_clip(row['example_with']))}")
    if row.get("example_without"):
        lines.append(f"          [dim]without: {shown(_clip(row['example_without']))}[/dim]")
    return lines


def _theme_block(row: dict[str, Any], result: Any, style: bool = False) -> list[str]:
    against = f" ({shown(row['vs'])})" if len(result.names) > 2 else ""
    lines = [f"  [bold cyan]{row['lead']:>6}[/bold cyan]  {label_markup(row['label'], row.get('label_score'))}"]
    if row["n_latents"] > 1:
        related = [shown(label) for label in row["related"][:RELATED_SHOWN]]
        rest = row["n_latents"] - 1 - len(related)
        lines.append(f"          [dim]+{row['n_latents'] - 1} related: {'; '.join(related) or 'unlabelled'}"
                     f"{f' and {rest} more' if rest > 0 and related else ''}[/dim]")
    if style:
        stats = (f"          {row['mean_a']:.1f} vs {row['mean_b']:.1f} per 1,000 tokens{against}   diff "
                 f"{row['diff']:+.1f} [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]   effect {row['effect']:.2f}   "
                 f"q {row['q']:.1e}")
    else:
        mean = result.config.measure == "mean"
        a, b = ((f"{row['mean_a']:.2f}", f"{row['mean_b']:.2f}") if mean
                else (f"{row['freq_a']:.1%}", f"{row['freq_b']:.1%}"))
        stats = (f"          {a} vs {b}{against}   diff {row['diff']:+.3f} [{row['ci_low']:+.3f}, "
                 f"{row['ci_high']:+.3f}]   q {row['q']:.1e}")
    if (result.style_replication_rate if style else result.replication_rate) is not None:
        stats += "   replicated" if row.get("replicated") else "   [yellow]not replicated[/yellow]"
    lines.append(stats)
    if row.get("example_with"):
        lines.append(f"          with:    {shown(_clip(row['example_with']))}")
    if row.get("example_without"):
        lines.append(f"          [dim]without: {shown(_clip(row['example_without']))}[/dim]")
    return lines


def _clip(text: str, width: int = EXAMPLE_CHARS) -> str:
    """At most `width` characters, centred on the marked peak when there is one."""
    if len(text) <= width:
        return text
    mark = max(text.find("<<"), 0)
    start = max(0, min(mark - width // 2, len(text) - width))
    return ("…" if start else "") + text[start:start + width].strip() + ("…" if start + width < len(text) else "")


def headline(result: Any) -> str:
    """The length gap, then the sentences of the record every renderer reads (`DiffResult.summary`: corpora,
    form, style, content), the notes, and replication last."""
    summary = result.summary()
    sentences = summary.lines()
    replication = sentences.pop() if summary.replication_sentence else None
    lines = [f"[bold]length:[/bold] {shown(summary.length)}", *(shown(line) for line in sentences),
             *(f"[yellow]note:[/yellow] {shown(note)}" for note in summary.notes)]
    if replication:
        lines.append(shown(replication))
    return "\n".join(lines)
