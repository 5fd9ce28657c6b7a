"""Errors that the CLI reports on one line with exit status 2."""
from __future__ import annotations


class DdmkitError(Exception):
    """Bad input or state the user can fix; the message names the problem and the fix."""


class ModelLoadError(DdmkitError):
    """A model folder, checkpoint or mixture file is missing, corrupt or of the wrong format."""
