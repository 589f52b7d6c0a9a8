"""python -m numpygpt COMMAND: the package's commands (for now, only `serve`)."""
import sys

USAGE = """usage: python -m numpygpt COMMAND [options]

commands:
  serve    serve a model over HTTP in OpenAI's completions API (python -m numpygpt serve --help)
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command == "serve":
        from .serve.cli import main as serve
        return serve(rest)
    print(f"numpygpt: error: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
