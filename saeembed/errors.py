"""The exception hierarchy: every message says what is wrong and what to do next."""


class SaeEmbedError(Exception):
    """Base class for user-facing errors; the CLI prints the message as one line and exits 1."""


class CorpusError(SaeEmbedError):
    """The input corpus cannot be read as documents (bad file, line, field or encoding)."""


class ReaderError(SaeEmbedError):
    """The reader model cannot be loaded or does not fit the request (layer, architecture)."""


class SAEError(SaeEmbedError):
    """The SAE cannot be loaded, or does not fit the reader (width, hook, format)."""


class StoreError(SaeEmbedError):
    """A store is missing, unreadable, or incompatible with another one."""


class ConfigError(SaeEmbedError):
    """A setting has a value it cannot take: the message names the field and the allowed values."""


class ProbeError(SaeEmbedError):
    """A saved risk probe or baseline cannot be used (missing, damaged, or of another shape or version)."""


class OutputError(SaeEmbedError):
    """The place an output is to be written cannot take it (a folder, read-only, no space)."""


class LLMError(SaeEmbedError):
    """The endpoint cannot be reached or keeps failing."""


class LabelError(SaeEmbedError):
    """A label file cannot be read or does not fit the SAE."""


class ClusteringError(SaeEmbedError):
    """A saved clustering cannot be used: missing, damaged, or fitted on a store embedded differently."""


class FilterError(SaeEmbedError):
    """A filter that is not a condition on the store's own fields."""


class ConceptError(SaeEmbedError):
    """A concept query selects nothing usable."""


def at_least(owner: str, field: str, value: object, low: float, *, optional: bool = False,
             integer: bool = True) -> None:
    """Refuse `value` unless it is a number (an int when `integer`) >= `low` (or None when `optional`)."""
    if value is None and optional:
        return
    kind = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value != value or value < low:
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{owner}.{field} = {value!r} is not allowed; give {what} >= {low:g}"
                          + (" (or None)" if optional else ""))


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """An error (or its text) on one line of at most `limit` characters, for the one-line messages users see."""
    text = " ".join(str(error).split()) or (type(error).__name__ if isinstance(error, BaseException) else "")
    return text if len(text) <= limit else text[:limit] + "…"
