"""The registry of layer kinds against everything derived from it: the parser, the JSON
Schema, the conventions, the naming scheme; and the layout of the code around it (a kind's
knowledge in its own module, no import circle)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from cnntrace.layers import KINDS
from cnntrace.layers.base import Layer
from cnntrace.losses import LOSSES
from cnntrace.problem import all_conventions, parse_layer
from cnntrace.schema import INPUT_SCHEMA, LAYER_SCHEMA
from tests.kinds import WRITTEN

PACKAGE = Path(__file__).resolve().parent.parent / "cnntrace"


def fields(kind) -> list[str]:
    """A kind's options as its dataclass declares them, named as the file writes them."""
    return [WRITTEN.get(f.name, f.name) for f in dataclasses.fields(kind) if f.name != "place" and not f.name.startswith("_")]


def required(kind) -> dict:
    """The options a file must give the kind, each with the first example its schema gives."""
    return {name: kind.OPTIONS[name].schema["examples"][0] for name in kind.REQUIRED}


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_every_option_a_kind_has_is_parsed_and_in_the_schema(kind):
    assert list(kind.OPTIONS) == fields(kind), "OPTIONS and the kind's fields disagree"
    (schema,) = (entry for entry in LAYER_SCHEMA["oneOf"] if entry.get("properties", {}).get("type") == {"const": kind.type})
    assert set(schema["properties"]) == {"type", "input", *kind.OPTIONS}  # any layer may read an earlier matrix
    assert schema["required"] == ["type", *kind.REQUIRED]
    assert schema["description"] == kind.DESCRIPTION


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_every_kind_is_a_layer_with_its_records(kind):
    assert issubclass(kind, Layer) and KINDS[kind.type] is kind
    assert kind.letter in "ZAPDFSC" and kind.DESCRIPTION
    for switch, convention in kind.CONVENTIONS.items():
        assert convention.option in kind.OPTIONS, switch
        assert convention.choices[0] == getattr(kind(), convention.option)


def test_a_network_loads_only_its_own_kinds_modules(tmp_path):
    """The registry imports a kind's module when a file first names the kind: start-up."""
    import json
    import subprocess
    import sys

    path = tmp_path / "in.json"
    path.write_text(json.dumps({
        "layers": ["conv", "relu", {"type": "maxpool", "size": 2}, "flatten", "dense", "sigmoid"],
        "X": [[float(i + j) for j in range(6)] for i in range(6)], "Y": 1.0,
        "W1": [[0.1] * 3] * 3, "B1": 0.0, "W2": [0.2] * 4, "B2": 0.0,
    }))  # fmt: skip
    script = ("import sys; from cnntrace.io import load_problem; load_problem(sys.argv[1]); "
              "print(' '.join(sorted(m for m in sys.modules if m.startswith('cnntrace.layers.'))))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    names = {f"cnntrace.layers.{module}" for module in ("base", "conv", "activation", "pool", "flatten", "dense")}
    assert set(loaded.stdout.split()) == names
    assert "conv" in KINDS and "lstm" not in KINDS
    assert list(KINDS) == [kind.type for kind in KINDS.values()]  # each name is its class's own
    # A kind's class by its name, and a kind's module, as before the registry was lazy.
    from cnntrace.layers import BatchNorm, MaxPool, activation

    assert MaxPool is KINDS["maxpool"] and BatchNorm is KINDS["batchnorm"] and activation.ReLU is KINDS["relu"]
    with pytest.raises(ImportError):
        from cnntrace.layers import Lstm  # noqa: F401


def test_the_schema_lists_every_kind_and_every_convention_once():
    assert LAYER_SCHEMA["oneOf"][0]["enum"] == list(KINDS)
    assert len(LAYER_SCHEMA["oneOf"]) == 1 + len(KINDS)
    layers_form = INPUT_SCHEMA["oneOf"][1]
    assert set(layers_form["properties"]["conventions"]["properties"]) == set(all_conventions())
    assert layers_form["properties"]["loss"]["oneOf"][0]["enum"] == list(LOSSES)


@pytest.mark.parametrize("kind", KINDS.values(), ids=list(KINDS))
def test_a_kind_written_with_its_defaults_reads_back_as_itself(kind):
    layer = parse_layer({"type": kind.type, **required(kind)}, "layers[0]")
    assert parse_layer(layer.options(), "layers[0]") == layer
    if not kind.REQUIRED:
        assert layer == kind()
        assert parse_layer(kind.type, "layers[0]") == layer


def test_the_schema_accepts_every_kind_with_each_default_the_parser_accepts():
    jsonschema = pytest.importorskip("jsonschema")
    for kind in KINDS.values():
        described = {"type": kind.type, **required(kind)}
        for name, option in kind.OPTIONS.items():
            if "default" in option.schema:
                described[name] = option.schema["default"]
        jsonschema.validate(described, LAYER_SCHEMA)
        parse_layer(described, "layers[0]")


# -- the layout of the code ----------------------------------------------------------------


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text())
    return out


def top_level_imports(tree: ast.Module) -> set[str]:
    """The cnntrace modules a module imports when it is loaded (not inside a function)."""
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnntrace"):
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("cnntrace"))
    return out


def test_no_module_imports_in_a_circle():
    trees = modules()
    graph = {name: {m for m in top_level_imports(tree) if m in trees and m != name} for name, tree in trees.items()}
    done, active = set(), []

    def visit(name):
        if name in active:
            raise AssertionError("import circle: " + " -> ".join(active[active.index(name):] + [name]))
        if name in done:
            return
        active.append(name)
        for other in graph[name]:
            visit(other)
        active.pop()
        done.add(name)

    for name in graph:
        visit(name)


#: Where a layer kind may be named: its own module, the registry, the reference network.
KIND_HOMES = ("cnntrace.layers", "cnntrace.reference")


def test_no_module_outside_the_kinds_tests_a_layers_type_or_class():
    option_names = {name for kind in KINDS.values() for name in kind.OPTIONS}
    kind_classes = {kind.__name__ for kind in KINDS.values()}
    found = []
    for name, tree in modules().items():
        if name.startswith(KIND_HOMES):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Constant) and side.value in KINDS:
                        found.append(f"{name}:{node.lineno} compares with {side.value!r}")
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnntrace.layers"):
                found += [f"{name}:{node.lineno} imports {a.name}" for a in node.names if a.name in kind_classes]
            elif isinstance(node, ast.Name) and node.id in kind_classes:
                found.append(f"{name}:{node.lineno} names {node.id}")
            elif isinstance(node, ast.Attribute) and node.attr in option_names:
                if isinstance(node.value, ast.Name) and node.value.id in ("layer", "first", "last"):
                    found.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert not found, "\n".join(found)
