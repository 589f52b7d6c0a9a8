"""Check every hand-written backward pass against finite differences, in float64.

    numpygpt gradcheck                       # every layer, then the whole model and AdamW
    numpygpt gradcheck layernorm attention   # some of them, explained
    numpygpt gradcheck --break layernorm     # a classic mistake, and the check catching it
"""
import sys

from ..errors import ConfigError
from ..gradcheck import CASES, Style, broken, report, run_case
from ..progress import Progress
from .args import integer


def add_arguments(p):
    p.add_argument("layers", nargs="*", metavar="LAYER", help=f"any of: {', '.join(CASES)} (default: all)")
    p.add_argument("--break", dest="broken", metavar="LAYER", choices=list(CASES),
                   help="check a deliberately wrong backward of LAYER and watch the check catch it")
    p.add_argument("--seed", type=integer(0), default=0, metavar="N", help="draws the example's values")


def run(args):
    unknown = [name for name in args.layers if name not in CASES]
    if unknown:
        raise ConfigError(f"unknown layer {unknown[0]!r}; choose from {', '.join(CASES)}")
    if args.broken and args.layers and args.broken not in args.layers:
        raise ConfigError(f"--break {args.broken} breaks a layer that is not checked here; add {args.broken} "
                          f"to the layers, or leave them out")
    names = args.layers or ([args.broken] if args.broken else list(CASES))
    style = Style(sys.stdout.isatty())
    failed = []
    for name in names:
        lib = broken(name) if args.broken == name else None
        if lib is not None:
            print(style(f"(with the deliberately broken backward of {name}: {lib.mistake})", "33"))
        if not report(run_case(CASES[name], lib, args.seed), style):
            failed.append(name)
    if failed:
        Progress().message(f"{args.prog}: FAILED for {', '.join(failed)}: the analytic gradient disagrees with "
                           "finite differences")
        return 1
    print(style(f"all {len(names)} check{'s' if len(names) > 1 else ''} passed", "32"))
    return 0
