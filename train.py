"""Train a GPT: `python train.py --steps 2000` is `numpygpt train --steps 2000` (see --help)."""
import sys

from numpygpt import commands


def main(argv=None) -> int:
    return commands.main(["train", *(sys.argv[1:] if argv is None else argv)], prog="train.py")


if __name__ == "__main__":
    sys.exit(main())
