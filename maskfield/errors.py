"""The one exception type the CLI turns into a one-sentence message and a non-zero exit."""


class MaskfieldError(Exception):
    """A problem with the user's input (files, layout, config) that they can fix.

    The message is one sentence that says what is wrong and how to fix it; the CLI prints it
    without a traceback and exits with status 2.
    """
