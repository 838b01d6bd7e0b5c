"""`saeembed labels`: import, generate and show what each latent means."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from typing_extensions import Annotated

from commands.ui import print_json, result_console, shown, stderr, user_errors

app = typer.Typer(help="Latent labels: import published ones, generate offline, show evidence.",
                  no_args_is_help=True, rich_markup_mode=None)


def _target(store: Path | None, sae: str | None) -> tuple[str, int]:
    """(SAE fingerprint, d_sae) from a store's metadata or from the SAE itself."""
    from saeembed.errors import SaeEmbedError

    if store is not None:
        from saeembed.store import read_meta

        meta = read_meta(store)["sae"]
        return meta["fingerprint"], int(meta["d_sae"])
    if sae is not None:
        from saeembed.sae import load_sae

        loaded = load_sae(sae)
        return loaded.info.fingerprint, loaded.d_sae
    raise SaeEmbedError("say which SAE the labels are for: --store STORE or --sae SAE")


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="Neuronpedia .jsonl.gz or .jsonl batches (file or folder), .json "
                                              "{latent: label} or .csv latent,label.")],
    store: Annotated[Optional[Path], typer.Option(help="A store embedded with the SAE.")] = None,
    sae: Annotated[Optional[str], typer.Option(help="The SAE itself (path or hub id).")] = None,
) -> None:
    """Import published labels for an SAE (checked against its width). A bad row is refused in one line
    naming the file, line and field; null or empty labels are skipped and counted."""
    from saeembed.labels import import_labels, save_labels

    with user_errors():
        fingerprint, d_sae = _target(store, sae)
        imported, notes = import_labels(path, d_sae)
        target = save_labels(imported, fingerprint)
    for note in notes:
        stderr.print(shown(note), highlight=False)
    stderr.print(f"[green]saved[/green] {shown(target)}", highlight=False)


@app.command("generate", short_help="Label latents from the documents they fire on (offline or an LLM).")
def generate(
    store: Annotated[Path, typer.Argument(help="A store to read the latents' documents from.")],
    method: Annotated[str, typer.Option(help="offline (peak tokens + contrastive keywords, no LLM) or llm.")
                      ] = "offline",
    min_docs: Annotated[int, typer.Option(help="Label latents active in at least this many documents.")] = 3,
    holdout: Annotated[float, typer.Option(help="--method offline: share of documents kept aside to score "
                                                "the labels (0: no score).")] = 0.3,
    llm_model: Annotated[Optional[str], typer.Option(help="--method llm: the model name at the endpoint.")] = None,
    llm_base_url: Annotated[str, typer.Option(help="--method llm: any OpenAI-compatible base URL.")
                            ] = "https://api.openai.com/v1",
    llm_key_env: Annotated[str, typer.Option(help="Environment variable holding the API key.")] = "OPENAI_API_KEY",
    max_latents: Annotated[int, typer.Option(help="--method llm: label at most this many (most frequent first).")
                           ] = 200,
    concurrency: Annotated[int, typer.Option(help="--method llm: requests in flight.")] = 8,
    llm_timeout: Annotated[float, typer.Option(help="--method llm: seconds one request may take in all; a request "
                                                    "that runs over is tried once more, then the run stops.")
                           ] = 60.0,
) -> None:
    """Label latents from the documents they fire on (offline, or by an LLM with detection scoring)."""
    import numpy as np

    from saeembed.cache_root import default_cache_root
    from saeembed.errors import SaeEmbedError
    from saeembed.labels import offline_labels, save_labels, score_summary
    from saeembed.store import load_store

    with user_errors():
        if method not in ("offline", "llm"):
            raise SaeEmbedError(f"unknown labelling method {method!r}; choose offline or llm")
        loaded = load_store(store)
        if method == "offline":
            generated = offline_labels(loaded, holdout=holdout, min_docs=min_docs)
        else:
            from saeembed.labels.llm import LLMClient, llm_labels

            if not llm_model:
                raise SaeEmbedError("--method llm needs --llm-model (and --llm-base-url for a local server)")
            freq = np.asarray((loaded.matrix > 0).sum(0)).ravel()
            latents = [int(i) for i in np.argsort(-freq) if freq[i] >= min_docs][:max_latents]
            client = LLMClient(llm_model, llm_base_url, llm_key_env, cache_dir=default_cache_root() / "llm",
                               timeout=llm_timeout)
            with _llm_progress() as on_progress:
                generated = llm_labels(loaded, client, latents, concurrency=concurrency, on_progress=on_progress)
        target = save_labels(generated, loaded.meta["sae"]["fingerprint"])
    stderr.print(f"[green]labelled[/green] {len(generated.label)} of {loaded.d_sae} latents -> {shown(target)}",
                 highlight=False)
    stderr.print(_quality_line(score_summary(generated), len(generated.label)), highlight=False)


@contextlib.contextmanager
def _llm_progress() -> Iterator[Callable[[Any], None]]:
    """A progress line on stderr: latents done of all, and which latent waits on what (a retry, a
    server's Retry-After, a slow answer)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from commands.ui import shown

    progress = Progress(TextColumn("labelling latents"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[note]}"), console=stderr, transient=True)
    task = progress.add_task("llm", total=None, note="")

    def update(state: Any) -> None:
        progress.update(task, total=state.total, completed=state.done, note=shown(state.note, one_line=True)[:100])

    with progress:
        yield update


def _quality_line(summary: dict, n_labels: int) -> str:
    """One line on how well the new labels detect held-out examples."""
    from saeembed.labels import KEEP_SCORE

    if not summary["scored"]:
        return "quality: not scored (too few held-out documents per latent, or --holdout 0)"
    return (f"quality (held-out detection accuracy, 0.5 = chance) of {summary['scored']} of {n_labels} labels: "
            f"mean {summary['mean']:.2f}, median {summary['median']:.2f}; {summary['below']} below {KEEP_SCORE}")


@app.command("show", short_help="A latent's label, score, frequency and top documents.")
def show(
    store: Annotated[Path, typer.Argument(help="Store whose documents give the evidence.")],
    latent: Annotated[int, typer.Argument(help="Latent id.")],
    top: Annotated[int, typer.Option(min=1, help="Top documents shown.")] = 5,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """A latent's label, frequency and top documents with its peak token marked << >>."""
    from saeembed.errors import SaeEmbedError
    from saeembed.labels import KEEP_SCORE, labels_for
    from saeembed.spans import marked_context, peak_span, top_documents
    from saeembed.store import load_store

    with user_errors():
        loaded = load_store(store)
        if not 0 <= latent < loaded.d_sae:
            raise SaeEmbedError(f"latent {latent} does not exist; this SAE has 0..{loaded.d_sae - 1}")
        labels = labels_for(loaded)
        n_active = int((loaded.matrix.getcol(latent) > 0).sum())
        docs = []
        for row, value in top_documents(loaded, latent, top):
            span = peak_span(loaded, row, latent)
            text = loaded.frame["text"][row]
            docs.append({"id": loaded.frame["id"][row], "activation": round(value, 3),
                         "context": marked_context(text, span) if span else text[:160]})
    report = {"latent": latent, "label": labels.get(latent), "source": labels.source.get(latent),
              "score": labels.score.get(latent), "documents": n_active,
              "frequency": n_active / max(loaded.n_docs, 1), "top": docs}
    if json_out:
        print_json(report)
        return
    console = result_console()
    console.print(f"[bold]latent {latent}[/bold]: {shown(report['label'] or '(unlabelled)')}"
                  + (f"  [dim]({shown(report['source'])})[/dim]" if report["source"] else ""), highlight=False)
    if report["score"] is not None:
        console.print(f"quality {report['score']:.2f}: held-out detection accuracy, 0.5 = chance"
                      + (f" [yellow](below {KEEP_SCORE}: the label may mislead)[/yellow]"
                         if report["score"] < KEEP_SCORE else ""),
                      highlight=False)
    elif report["label"]:
        console.print("quality: not scored", highlight=False)
    console.print(f"fires in {n_active} of {loaded.n_docs} documents ({report['frequency']:.1%})", highlight=False)
    for doc in docs:
        console.print(f"  [cyan]{doc['activation']:>7.3f}[/cyan] {shown(str(doc['id']))}: {shown(doc['context'])}",
                      highlight=False)
