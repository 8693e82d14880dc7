"""The one error type users see: the CLI prints it as a single line and exits with code 2."""


class FlatprivError(ValueError):
    """Bad input or a refused configuration. The message is one line that names what to fix."""
