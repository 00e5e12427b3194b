"""The one exception type the command line turns into a clear error line.

Raise `MassError` for anything a user can fix (bad path, bad config, bad data); the CLI prints
`error: <message>` and exits with status 2. Any other exception is a bug and keeps its traceback.
"""


class MassError(Exception):
    """A user-facing error: the message alone must say what is wrong and how to fix it."""
