"""The embedded development stack: real PostgreSQL and Temporal servers from PyPI wheels."""


class StackError(RuntimeError):
    """An embedded server could not start; the message says which and where its log is."""
