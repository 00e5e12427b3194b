"""MASS: test-time meta-adaptation of language models with self-synthesised data.

See README.md for the quick start and METHOD notes; `mass --help` lists the commands.
"""

__version__ = "0.1.0"
