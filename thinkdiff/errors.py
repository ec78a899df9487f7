"""The one exception type the library raises for problems a user can fix."""


class ThinkDiffError(ValueError):
    """A problem with the user's models, files or inputs; the message says what is wrong and how to fix it."""
