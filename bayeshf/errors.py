"""The one exception type bayeshf raises for bad input."""

from __future__ import annotations


class BayeshfError(Exception):
    """Bad input or an impossible request, explained in one sentence.

    The message names the file (when there is one) and the cause, so the CLI
    can print it as-is and exit nonzero without a traceback.
    """
