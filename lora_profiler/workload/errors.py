"""Errors a user can fix: bad model files, bad flags, nothing to adapt."""


class WorkloadError(ValueError):
    """Bad input from the user. The message is one line that names the file or flag and the fix;
    the command line prints it alone and exits with status 2."""
