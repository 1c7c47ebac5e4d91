"""Error types for input the user got wrong, so front ends can tell them from bugs.

Every check of user input (a config value, a path, a name, a missing optional package) raises one of these, naming
the user-facing argument. The recipes print such an error as one line and exit with code 2; any other exception is a
bug (or a failure that is not the user's typo, such as a shape error in ``training_step`` or an ONNX parity failure)
and keeps its traceback.

All of them subclass the built-in type a Python caller would expect (``ValueError``, ``FileNotFoundError``,
``ImportError``, ``PermissionError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """A value the user gave is wrong (the message names the argument or config key and what is allowed)."""


class MissingInputError(UserInputError, FileNotFoundError):
    """A path or URL the user gave does not exist (the message names it)."""


class UnreadableInputError(UserInputError, PermissionError):
    """A path or URL the user gave cannot be read or written (the message names it and the cause)."""


class MissingDependencyError(UserInputError, ImportError):
    """An option the user chose needs a package that is not installed (the message gives the install command)."""


def builtin_name(err: BaseException) -> str:
    """The name of the first built-in class of ``err`` (``MissingInputError`` -> ``FileNotFoundError``).

    Example:
        >>> builtin_name(MissingInputError("x")), builtin_name(UserInputError("x"))
        ('FileNotFoundError', 'ValueError')
    """
    for kind in (FileNotFoundError, PermissionError, ImportError):
        if isinstance(err, kind):
            return kind.__name__
    return next(c.__name__ for c in type(err).__mro__ if c.__module__ == "builtins")
