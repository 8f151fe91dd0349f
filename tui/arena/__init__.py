"""The arena: anonymous pairs of models answer the same prompts, a person votes, ratings follow (no Textual here).

This package's own names are the few the command line needs to build its arguments, kept light so that
`zootui --help` does not import the rest.
"""

RANDOM = "random"
"""The pair choice "any library model, at random"."""


class ArenaError(Exception):
    """A battle, log or leaderboard that cannot go on as asked; one line saying what to do."""
