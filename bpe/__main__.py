"""The tokenizer's command line is `numpygpt tokenizer train|encode|decode`."""
import sys

if __name__ == "__main__":
    sys.exit("python -m bpe: the tokenizer's commands are `numpygpt tokenizer train|encode|decode` "
             "(or python -m numpygpt tokenizer ...)")
