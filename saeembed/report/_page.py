"""What every report page shares: the jinja2 environment (autoescaped templates shipped with the package),
number formats, texts split into plain and highlighted segments, and the atomic write."""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from saeembed.analysis.summaries import count
from saeembed.spans import MARK_CLOSE, MARK_OPEN

# Characters of context kept around a highlighted span (documents can be pages long).
CONTEXT_CHARS = 240
# Longest text shown whole when nothing in it is highlighted.
PLAIN_CHARS = 400


class Segment(NamedTuple):
    """A piece of a document: plain text, or a highlighted span (`mark`, with a tooltip `title`)."""

    text: str
    mark: bool = False
    title: str = ""


def split_marked(text: str | None, title: str = "") -> list[Segment]:
    """A result text carrying one peak marked `<< >>` (`saeembed.spans.MARK_OPEN` / `MARK_CLOSE`) as
    segments: the marked span highlighted, the rest plain. The markers may also occur in the text itself
    (code: `a << b`); the pair enclosing the shortest span is taken as the mark (a peak is one token), and a
    text without a complete pair stays plain. Nothing here is HTML: the template escapes every segment."""
    if not text:
        return []
    best: tuple[int, int] | None = None
    at = text.find(MARK_OPEN)
    while at >= 0:
        close = text.find(MARK_CLOSE, at + len(MARK_OPEN))
        if close < 0:
            break
        if best is None or close - at <= best[1] - best[0]:  # ties: the later (innermost) opening
            best = (at, close)
        at = text.find(MARK_OPEN, at + 1)
    if best is None:
        return [Segment(text)]
    start, close = best
    parts = [Segment(text[:start]), Segment(text[start + len(MARK_OPEN):close], True, title),
             Segment(text[close + len(MARK_CLOSE):])]
    return [p for p in parts if p.text]


def clip_marked(segments: list[Segment], width: int = CONTEXT_CHARS) -> list[Segment]:
    """At most `width` characters of plain text on either side of the highlighted spans (… where cut)."""
    if not any(s.mark for s in segments):
        return clip_plain(segments[0].text if segments else "")
    out = list(segments)
    if not out[0].mark and len(out[0].text) > width:
        out[0] = Segment("…" + out[0].text[-width:].lstrip())
    if not out[-1].mark and len(out[-1].text) > width:
        out[-1] = Segment(out[-1].text[:width].rstrip() + "…")
    return [Segment(s.text[:width] + " … " + s.text[-width:], False) if not s.mark and 0 < i < len(out) - 1
            and len(s.text) > 2 * width + 3 else s for i, s in enumerate(out)]


def clip_plain(text: str | None, width: int = PLAIN_CHARS) -> list[Segment]:
    if not text:
        return []
    return [Segment(text if len(text) <= width else text[:width].rstrip() + "…")]


def span_segments(text: str, spans: Iterable[tuple[int, int, str]], width: int = CONTEXT_CHARS) -> list[Segment]:
    """`text` with the character spans (start, end, title) highlighted, clipped to `width` characters of
    context around them. Overlapping spans merge (titles joined)."""
    merged: list[list[Any]] = []
    for start, end, title in sorted((int(s), int(e), t) for s, e, t in spans if 0 <= s < e <= len(text)):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            merged[-1][2] = f"{merged[-1][2]}; {title}" if title and title not in merged[-1][2] else merged[-1][2]
        else:
            merged.append([start, end, title])
    if not merged:
        return clip_plain(text)
    out, at = [], 0
    for start, end, title in merged:
        if start > at:
            out.append(Segment(text[at:start]))
        out.append(Segment(text[start:end], True, title))
        at = end
    if at < len(text):
        out.append(Segment(text[at:]))
    return clip_marked(out, width)


def pct(value: Any, digits: int = 1) -> str:
    return "–" if _missing(value) else f"{float(value):.{digits}%}"


def num(value: Any, digits: int = 3) -> str:
    return "–" if _missing(value) else f"{float(value):.{digits}f}"


def signed(value: Any, digits: int = 3) -> str:
    return "–" if _missing(value) else f"{float(value):+.{digits}f}"


def sci(value: Any) -> str:
    """p- and q-values: 0.012, 3.4e-05, < 1e-300."""
    if _missing(value):
        return "–"
    value = float(value)
    if value <= 0:
        return "< 1e-300"
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def sentence(line: str) -> str:
    """A summary line as a sentence of its own: its first letter capitalised, the rest as written."""
    return line[:1].upper() + line[1:]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# Control characters (C0 but tab and newline, DEL, C1, so raw ESC sequences), the bidirectional marks and
# overrides that reorder what a reader sees (U+202E made "evil" read backwards), and the Unicode line and
# paragraph separators: what the terminal strips, stripped from every value a page shows.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SEPARATORS = re.compile("[\u2028\u2029]")


def without_controls(value: Any) -> Any:
    """A template value with control characters and bidi overrides removed (Markup stays Markup)."""
    from markupsafe import Markup

    if isinstance(value, str):
        cleaned = _SEPARATORS.sub(" ", _CONTROLS.sub("", value))
        return Markup(cleaned) if isinstance(value, Markup) else cleaned
    return value


@lru_cache(maxsize=1)
def environment() -> Any:
    """The templates' environment: autoescape on everywhere, undefined names are errors."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("saeembed.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=without_controls)
    env.filters.update(pct=pct, num=num, signed=signed, sci=sci, sentence=sentence)
    from saeembed.labels.offline import KEEP_SCORE

    env.globals.update(count=count, marked=marked, label_bar=KEEP_SCORE)  # label_bar: below it a label is weak
    return env


def marked(text: str | None, start: int | None, end: int | None, title: str = "") -> list[Segment]:
    """A result's text with its peak span (character offsets, as results carry them) highlighted and the
    context clipped; the text plain (clipped) without a span. For templates: `m.text(marked(...))`."""
    if not text:
        return []
    if start is None or end is None:
        return clip_plain(text)
    return span_segments(text, [(start, end, title)])


def write_result_page(result: Any, path: str | Path, template: str, title: str) -> Path:
    """The page of a registered analysis (`saeembed.analysis.registry`): its template gets the result and its
    summary record (`result.summary()`), the same record the terminal and `--json` read."""
    return render(template, path, title=title, result=result, summary=result.summary())


def render(template: str, path: str | Path, **context: Any) -> Path:
    """Render `template` with `context` and write it to `path` atomically; returns the path."""
    from saeembed import __version__
    from saeembed.outputs import PAGE_SUFFIXES, check_output

    check_output(path, suffixes=PAGE_SUFFIXES, what="an HTML page")
    html = environment().get_template(template).render(version=__version__, **context)
    return write_atomic(path, html)


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary sibling and os.replace (`saeembed.atomic`, which
    every writer of the package shares): a reader never sees half a page, and an interrupted write leaves
    the old page (or none)."""
    from saeembed.atomic import write_text

    return write_text(path, text)


def latent_name(latent: Any, label: str | None, width: int = 60) -> str:
    """'123 label' (the label shortened), or '123' when unlabelled."""
    label = (label or "").strip()
    if len(label) > width:
        label = label[: width - 1].rstrip() + "…"
    return f"{int(latent)} {label}".strip()


def distinct(values: Sequence[Any]) -> list[Any]:
    seen: dict[Any, None] = {}
    for value in values:
        seen.setdefault(value, None)
    return list(seen)
