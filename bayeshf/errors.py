"""The one exception type bayeshf raises for bad input."""

from __future__ import annotations


class BayeshfError(Exception):
    """Bad input or an impossible request, explained in one sentence.

    The message names the file (when there is one) and the cause, so the CLI
    can print it as-is and exit nonzero without a traceback.
    """


def interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C/SIGTERM behind ``error``, if one was raised inside a library callback that wrapped it.

    A signal handler raises wherever Python happens to be; inside JAX's C++
    callbacks (pytree equality, for one) the interrupt comes back as the
    cause of another exception.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None

