"""The exception types for mistakes a user can make and fix."""


class UserError(Exception):
    """Bad input: the CLI prints `mupbench: error: <message>` on one line and exits 2.

    The message names the problem and the fix. Raise it before anything is written to a store.
    """


class CodeChanged(UserError):
    """A file of the user's code (model factory, ablations, trainer, or what they import) changed while its sweep ran:
    the sweep stops once with this message rather than storing every remaining run as failed; running the command
    again plans the runs of the code as it is then."""
