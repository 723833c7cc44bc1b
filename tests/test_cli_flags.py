"""The core names parameters, never a command-line flag; the CLI alone maps them to flags."""

import ast
import re
from pathlib import Path

import pytest

from cnntrace.cli import FLAGS
from cnntrace.errors import ArgumentError

PACKAGE = Path(__file__).resolve().parent.parent / "cnntrace"
#: The command line itself, and the renderers, whose text (a note that --full shows all)
#: is what the user reads.
NOT_CORE = ("cli.py", "__main__.py", "render")
FLAG = re.compile(r"--[a-z]")


def core_modules() -> list[Path]:
    modules = [path for path in sorted(PACKAGE.rglob("*.py")) if path.relative_to(PACKAGE).parts[0] not in NOT_CORE]
    assert len(modules) > 10  # the walk found the package
    return modules


def docstrings(tree: ast.AST) -> set[int]:
    """The ids of the nodes that are docstrings (of the module, a class or a function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of the module but its docstrings, f-strings'
    literal parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = docstrings(tree)
    return [
        (node.lineno, node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
    ]  # fmt: skip


def argument_errors(path: Path) -> list[tuple[int, str]]:
    """(line, parameter) for each parameter an ArgumentError raised in the module names: its
    key and its mentions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "ArgumentError":
            for keyword in node.keywords:
                if keyword.arg == "key":
                    out.append((node.lineno, ast.literal_eval(keyword.value)))
                elif keyword.arg == "mentions":
                    out += [(node.lineno, name) for name in ast.literal_eval(keyword.value)]
    return out


def test_the_core_names_no_flag():
    named = [
        f"{path.relative_to(PACKAGE)}:{line}: {text!r}"
        for path in core_modules() for line, text in strings(path) if FLAG.search(text)
    ]  # fmt: skip
    assert named == [], "the core names a parameter and leaves its flag to cnntrace.cli.FLAGS"


def test_the_check_finds_a_flag(tmp_path):
    """The check above can fail: a flag in a message, plain or in an f-string, is found; one
    in a docstring is not."""
    module = tmp_path / "m.py"
    module.write_text('"""Give --seed."""\n\ndef f(x):\n    """--full."""\n    raise E(f"try --level {x}")\n')
    assert [text for _, text in strings(module) if FLAG.search(text)] == ["try --level "]


def test_every_parameter_an_error_names_has_its_flag():
    named = [(path.name, line, name) for path in core_modules() for line, name in argument_errors(path)]
    assert {name for *_, name in named} >= {"momentum", "fraction", "level", "seed", "preset", "image"}
    assert [entry for entry in named if entry[2] not in FLAGS] == []


@pytest.mark.parametrize(
    ("error", "plain", "on_the_command_line"),
    [
        (ArgumentError("must be below 1", key="momentum"), "momentum: must be below 1", "--momentum: must be below 1"),
        (
            ArgumentError("none found; try {level} 2", key="seed", mentions=("level",), file="x.json"),
            "x.json: seed: none found; try level 2",
            "x.json: --seed: none found; try --level 2",
        ),
    ],
)  # fmt: skip
def test_an_argument_error_names_the_parameter_as_its_reader_does(error, plain, on_the_command_line):
    assert str(error) == plain
    assert error.spelled(FLAGS.get) == on_the_command_line


def command_options() -> set[str]:
    """Every option of every command, as typed on the command line (--seed, -o …)."""
    import typer.main

    from cnntrace.cli import app

    group = typer.main.get_command(app)
    return {
        option
        for command in group.commands.values()
        for parameter in command.params
        for option in (*parameter.opts, *parameter.secondary_opts)
    }


def test_every_flag_of_the_table_is_an_option_of_a_command():
    assert set(FLAGS.values()) - command_options() == set()


def test_every_format_has_its_renderer_and_every_renderer_exists():
    from cnntrace import cli

    tables = [
        (cli.Format, cli.STEP_RENDERERS), (cli.CheckFormat, cli.CHECK_RENDERERS),
        (cli.CheckFormat, cli.VERIFY_RENDERERS), (cli.ExplainFormat, cli.EXPLAIN_RENDERERS),
        (cli.SheetFormat, cli.SHEET_RENDERERS),
    ]  # fmt: skip
    for formats, table in tables:
        assert set(table) == set(formats), table
    # train renders each format once at the end, or epoch by epoch as NDJSON does: one of the two.
    assert set(cli.TRAIN_RENDERERS) | set(cli.EPOCH_RENDERERS) == set(cli.TrainFormat)
    assert set(cli.TRAIN_RENDERERS) & set(cli.EPOCH_RENDERERS) == set()
    every = [*tables, (cli.TrainFormat, cli.TRAIN_RENDERERS), (cli.TrainFormat, cli.EPOCH_RENDERERS),
             (cli.Format, cli.FILE_HEADINGS)]  # fmt: skip
    for _, table in every:
        for output_format in table:
            assert callable(cli._renderer(table, output_format)), (output_format, table[output_format])
