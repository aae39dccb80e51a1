"""The data's errors that a user can act on, each with a message that says how (the console shows them as one line:
:mod:`lightning_modules.console`)."""


class DataDownloadError(RuntimeError):
    """A dataset download failed (no network, moved URL); the message says how to place the files by hand."""


class DamagedDataError(OSError):
    """A file of the data that cannot be read (an image, a shard chunk or index): the message names it and the remedy.

    Raised in a DataLoader worker, it reaches the training process re-made from the worker's report (torch raises
    ``type(err)(report)``, the report being the worker's traceback): the message is then the original one again and
    the worker's traceback a note, which the traceback in the run's log shows and the console's one message does
    not."""

    def __init__(self, message: str) -> None:
        relayed = message.startswith("Caught ") and "Original Traceback" in message
        marker = f"{type(self).__name__}: "
        super().__init__(message.rsplit(marker, 1)[-1].strip() if relayed and marker in message else message)
        if relayed:
            self.add_note(message)
