"""Where `python -m numpygpt.hf` went: export is `numpygpt export` (numpygpt/formats/hf.py)."""
import sys

if __name__ == "__main__":
    sys.exit("python -m numpygpt.hf: exporting is `numpygpt export CHECKPOINT FOLDER` (or python -m numpygpt export)")
