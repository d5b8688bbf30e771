"""The one exception type for mistakes a user can make and fix."""


class UserError(Exception):
    """Bad input: the CLI prints `mupbench: error: <message>` on one line and exits 2.

    The message names the problem and the fix. Raise it before anything is written to a store.
    """
