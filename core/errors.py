"""The one error type that the CLI turns into a clear message and exit code 2."""


class LowbitError(ValueError):
    """A problem with the user's input or environment, with the fix spelled out.

    A ``ValueError``, as the checks of lowbit's components raise for a bad parameter: one
    hierarchy, in which every user error is a value error.

    Parameters
    ----------
    message : str
        What is wrong, naming the offending value.
    hint : str, optional
        How to fix it.
    """

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self):
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message
