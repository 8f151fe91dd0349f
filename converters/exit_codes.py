"""Exit codes of every zootui command and of `python -m converters`: the one place they are stated.

Dependency-free, so tui's command line can use it without loading the converter (numpy, gguf).
"""

EXIT_FAILED = 1
"""The command ran, but not all of it succeeded (an unattended battle whose answer failed)."""
EXIT_USER_ERROR = 2
"""The user can fix it: the one line on stderr says how."""
EXIT_INTERRUPTED = 130
"""Ctrl-C or a cancel (128 + SIGINT, as shells report it)."""
