"""The ``chatbridge`` command's exit status, shared by every subcommand."""

EXIT_OK = 0
"""A clean stop, or a check where everything works."""
EXIT_FAILED = 1
"""Something failed at run time, or a check found what ``run`` would refuse."""
EXIT_CONFIG = 2
"""The configuration is wrong: nothing was started."""
