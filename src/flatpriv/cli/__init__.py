"""Command line: the argparse parser (:mod:`.main`) and one function per command (:mod:`.commands`).

Each command parses, calls one library function and prints; errors are one line on stderr with exit code 2.
Imports: anything in flatpriv (it is the top layer); nothing imports it except ``flatpriv.__main__``.
"""

from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
