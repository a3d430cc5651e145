"""The package's own exception types (a leaf module: everything may import it)."""


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key."""
