"""`python -m numpygpt COMMAND`: the same as the installed `numpygpt` command."""
import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
