"""The one exception type for mistakes a user can make.

The app shows its message in a dialog and the CLI prints it and exits non-zero, so the message must say what went
wrong and what to do about it; a traceback is never the user interface.
"""


class CervixFMError(Exception):
    """A problem with user input (path, file, checkpoint, labels, configuration) explained in plain words."""


class CheckpointError(CervixFMError):
    """The checkpoint file cannot be read, is unsafe, or does not fit the requested architecture."""


class ConfigError(CervixFMError):
    """A model configuration or preset is unknown or inconsistent."""


class InputError(CervixFMError):
    """An input file (image, slide, label table) is missing, unreadable or malformed."""
