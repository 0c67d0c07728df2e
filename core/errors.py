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


class SlideError(InputError):
    """A slide or image cannot be opened or read: missing, not a slide, truncated, or a damaged tile.

    The message names the file and the problem; for a damaged tile it also names the region, so a reader can skip
    it and carry on (the slide stays usable for the other tiles).
    """
