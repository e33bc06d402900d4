"""User-facing errors: one line that names the cause and the fix; entry scripts exit non-zero on them."""


class SynthError(Exception):
    """A problem with the user's input (config, data, checkpoint); the message says what to do."""
