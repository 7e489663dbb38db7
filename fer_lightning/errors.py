"""The one base class of every error fer_lightning raises on purpose.

Callers (a notebook, a service wrapping the emotion finder, the command-line shells) catch the project's errors
in one clause, ``except FERLightningError``, and let genuine bugs through. Each concrete error also derives from
the builtin it always was (``ValueError``, ``FileNotFoundError``, ...), so existing ``except ValueError`` code
keeps working.
"""

from __future__ import annotations


class FERLightningError(Exception):
    """Something the user can fix: bad input, a missing file, a wrong setting. The message says how."""


class UsageError(FERLightningError, ValueError):
    """A request that cannot mean anything (an unknown key or format, a missing required argument).

    Commands answer it with their usage text and exit status 2, before any work or output.
    """
