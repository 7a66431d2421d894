"""`python -m returnsd` runs the command line."""

from returnsd.cli import main

main()
