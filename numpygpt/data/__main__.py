"""`numpygpt prepare` is where preparing shards lives now."""
import sys

if __name__ == "__main__":
    sys.exit("python -m numpygpt.data: preparing shards is `numpygpt prepare INPUT --out DIR` "
             "(or python -m numpygpt prepare ...)")
