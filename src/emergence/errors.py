"""The package's own exception types (a leaf module: everything may import it)."""


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key."""


class InputFileError(ValueError):
    """A problem in a user's data file (a precomputed representation: its ids or values),
    described in one line that names the file and the ids concerned (the first few and how
    many)."""
