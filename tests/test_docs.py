"""The docs stay true: every command line shown in README.md and docs/ parses (the command
exists and takes each flag shown), every relative link resolves, and the gradient checks a
page shows print what the page says they print.

A command is any line of a ```bash or ```console block that runs numpygpt (`numpygpt ...`,
`python -m numpygpt ...`, `python train.py ...`, `python sample.py ...`, behind `$ `, `&&`,
`|` or `mpiexec -n N` too). In a ```console block, the output under `$ numpygpt gradcheck ...`
is compared with what the command prints; a line `...` there stands for any lines.
"""
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from numpygpt.commands import COMMANDS, build_parser, main

PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "benchmarks" / "README.md", REPO_ROOT / "data" / "README.md",
         *sorted((REPO_ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(bash|console|sh)\n(.*?)```", re.S)
SHIMS = {"train.py": "train", "sample.py": "sample"}


def blocks(page: Path):
    return BLOCK.findall(page.read_text())


def commands_in(kind: str, text: str):
    """(subcommand, args) of every numpygpt command line in a shell block (in a console
    block, the lines after `$ `: the others are output)."""
    for line in text.splitlines():
        line = line.strip()
        if kind == "console" and not line.startswith("$ "):
            continue
        line = line.removeprefix("$ ")
        for part in re.split(r"&&|\|", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            if words[:1] == ["mpiexec"]:  # mpiexec [-n N] [-hosts H] ... COMMAND
                while words and (words[0] == "mpiexec" or words[0].startswith("-")):
                    words = words[2:] if words[0].startswith("-") else words[1:]
            words = [w for w in words if not re.fullmatch(r"[A-Z_]+=\S*", w)]  # VAR=value prefixes
            if words[:1] == ["env"]:
                words = [w for w in words[1:] if not w.startswith("-u") and w not in ("OPENBLAS_CORETYPE",
                                                                                         "OPENBLAS_L2_SIZE")]
            if words[:3] == ["python", "-m", "numpygpt"]:
                words = ["numpygpt", *words[3:]]
            if words[:1] == ["python"] and len(words) > 1 and words[1] in SHIMS:
                yield SHIMS[words[1]], words[2:]
            elif words[:1] == ["numpygpt"] and len(words) > 1:
                yield words[1], words[2:]


def shown_commands():
    found = []
    for page in PAGES:
        for kind, text in blocks(page):
            found += [(page.relative_to(REPO_ROOT).as_posix(), name, args) for name, args in commands_in(kind, text)]
    return found


def test_the_pages_show_commands():
    names = {name for _, name, _ in shown_commands()}
    assert {"train", "sample", "prepare", "serve", "gradcheck"} <= names


@pytest.mark.parametrize("page, name, args", shown_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_command_shown_parses(page, name, args, capsys):
    assert name in COMMANDS, f"{page}: numpygpt {name} is no command"
    parser, _ = build_parser(name)
    if args in (["--help"], ["-h"]):
        return
    try:
        parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{page}: numpygpt {name} {' '.join(args)}: {capsys.readouterr().err.strip()}")


def links(page: Path):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            yield target.split("#")[0]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_relative_link_resolves(page):
    missing = [t for t in links(page) if not (page.parent / t).exists()]
    assert not missing, missing


def shown_outputs():
    """(page, argv, the lines the page shows it printing) of each `$ numpygpt gradcheck`."""
    found = []
    for page in PAGES:
        for kind, text in blocks(page):
            if kind != "console":
                continue
            for chunk in re.split(r"^(?=\$ )", text, flags=re.M):
                command, _, output = chunk.partition("\n")
                if command.startswith("$ numpygpt gradcheck"):
                    found.append((page.name, shlex.split(command[2:])[1:], output.rstrip("\n").splitlines()))
    return found


def matches(shown: list[str], printed: list[str]) -> bool:
    """Line by line, where a shown `...` stands for any number of printed lines."""
    if not shown:
        return not printed
    if shown[0].strip() == "...":
        return any(matches(shown[1:], printed[i:]) for i in range(len(printed) + 1))
    return bool(printed) and shown[0].rstrip() == printed[0].rstrip() and matches(shown[1:], printed[1:])


@pytest.mark.parametrize("page, argv, shown", shown_outputs(), ids=lambda v: v if isinstance(v, str) else None)
def test_the_output_shown_is_what_the_command_prints(page, argv, shown):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(argv)
    printed = (out.getvalue() + err.getvalue()).rstrip("\n").splitlines()
    assert matches(shown, printed), "\n".join(printed)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_flag_has_help_and_each_default_is_said_once(name):
    parser, _ = build_parser(name)
    actions = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert all(a.help for a in actions), [a.dest for a in actions if not a.help]
    text = parser.format_help()
    assert "(default: None)" not in text and "(default: False)" not in text
    for paragraph in re.split(r"\n(?=  -)", text):
        assert paragraph.count("(default") <= 1, paragraph


@pytest.mark.parametrize("old, new", [("numpygpt.data", "numpygpt prepare"), ("numpygpt.gradcheck", "numpygpt gradcheck"),
                                      ("numpygpt.tune", "numpygpt tune"), ("numpygpt.hf", "numpygpt export"),
                                      ("bpe", "numpygpt tokenizer")])
def test_the_old_command_forms_say_where_the_command_is(old, new):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", old], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 1 and new in done.stderr and done.stderr.count("\n") == 1
