"""Where `python -m numpygpt.tune` went: sweeps are `numpygpt tune` (numpygpt/training/tune.py)."""
import sys

if __name__ == "__main__":
    sys.exit("python -m numpygpt.tune: sweeps are `numpygpt tune ...` (or python -m numpygpt tune ...)")
