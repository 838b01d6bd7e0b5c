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
