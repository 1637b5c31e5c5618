"""The one exception type for errors a user can cause.

The CLI prints these as a single line on stderr and exits non-zero; anything else is a bug and
keeps its traceback.
"""


class EdgesnnError(Exception):
    """A bad file, an unsupported layer, a bad option: something the user can fix."""
