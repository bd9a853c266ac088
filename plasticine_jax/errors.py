"""User-facing error type: one clear line naming the problem and the fix (the CLI prints it without a traceback)."""


class ConfigError(ValueError):
    """Bad user input: unknown env/algo/intervention, incompatible options, bad values."""
