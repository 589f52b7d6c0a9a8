"""Sample from a model: `python sample.py --top-p 0.9` is `numpygpt sample --top-p 0.9` (see --help)."""
import sys

from numpygpt import commands


def main(argv=None) -> int:
    return commands.main(["sample", *(sys.argv[1:] if argv is None else argv)], prog="sample.py")


if __name__ == "__main__":
    sys.exit(main())
