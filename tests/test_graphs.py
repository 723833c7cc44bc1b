"""Networks with skip connections (issue 20): a layer reads an earlier matrix ("input"), an add
or a concat merges ("from"), and where a matrix feeds several layers its gradient is the sum of
what each path sends back, each part shown.

The four networks of the issue (a ResNet basic block, a downsampling block with a 1×1
projection, a DenseNet-style concatenation, a two-branch network) and U-Net's skip against the naive twins
always and against PyTorch's autograd (float64) where torch is installed; the names, the sums
and their parts, explain, the training pass, verify's mistake at a fork, the diagram in the
page and the Markdown export, and the input errors on the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from cnntrace.cli import app
from cnntrace.explain import explain
from cnntrace.gradcheck import check
from cnntrace.io import problem_from_dict
from cnntrace.tracer import run
from cnntrace.verify import verify
from tests.kinds import ROWS, naive_pass, options, placed, torch_pass

SAMPLE = Path(__file__).parent.parent / "samples" / "resnet-block.json"
ORACLE = {"rtol": 1e-12, "atol": 1e-12}
TORCH = {"rtol": 1e-9, "atol": 1e-12}

BASIC_BLOCK = [{"type": "conv", "padding": 1}, "batchnorm", "relu", {"type": "conv", "padding": 1}, "batchnorm",
               {"type": "add", "from": "X"}, "relu"]  # fmt: skip
DOWNSAMPLING = [{"type": "conv", "stride": 2, "padding": 1}, "batchnorm", "relu", {"type": "conv", "padding": 1},
                "batchnorm", {"type": "conv", "stride": 2, "input": "X"}, "batchnorm", {"type": "add", "from": "Z4"},
                "relu"]  # fmt: skip
HEAD = ["global_avgpool", "flatten", "dense"]

#: name: (layers, one image's X (C, H, W), {number of a conv or dense layer: its W's shape and
#: its B's}); batch norm's γ and β are sized by what it gets.
NETWORKS = {
    "basic-block": (BASIC_BLOCK + HEAD, (2, 4, 4), {1: ((2, 2, 3, 3), 2), 3: ((2, 2, 3, 3), 2), 5: ((2, 1), 1)}),
    "downsampling": (DOWNSAMPLING + HEAD, (2, 5, 5),
                     {1: ((3, 2, 3, 3), 3), 3: ((3, 3, 3, 3), 3), 5: ((3, 2, 1, 1), 3), 7: ((3, 2), 2)}),
    # DenseNet: each block's output joined to everything before it.
    "densenet": ([{"type": "conv", "padding": 1}, "relu", {"type": "concat", "from": "X"},
                  {"type": "conv", "padding": 1}, "relu", {"type": "concat", "from": "C1"}, *HEAD], (2, 4, 4),
                 {1: ((2, 2, 3, 3), 2), 2: ((3, 4, 3, 3), 3), 3: ((7, 2), 2)}),
    # Two branches from X joined by a concat, a residual add in one (A1 feeds Z2 and S2), and
    # vectors that fork (F feeds Z4 and Z5): three forks.
    "two-branch": ([{"type": "conv", "padding": 1}, "relu", {"type": "conv", "padding": 1},
                    {"type": "add", "from": "A1"}, "relu", "maxpool", {"type": "conv", "stride": 2, "input": "X"},
                    {"type": "concat", "from": "P2"}, "flatten", "dense", "tanh", {"type": "dense", "input": "F"},
                    {"type": "add", "from": "A4"}], (2, 4, 4),
                   {1: ((2, 2, 3, 3), 2), 2: ((2, 2, 3, 3), 2), 3: ((2, 2, 2, 2), 2), 4: ((16, 3), 3),
                    5: ((16, 3), 3)}),
    # U-Net's skip: down by a strided conv, up by a transposed one, joined to X.
    "unet": ([{"type": "conv", "stride": 2, "padding": 1}, "relu", {"type": "conv_transpose", "stride": 2},
              {"type": "concat", "from": "X"}, "flatten", "dense"], (2, 4, 4),
             {1: ((3, 2, 3, 3), 3), 2: ((3, 2, 2, 2), 2), 3: ((64, 2), 2)}),
}


def network_input(name: str, seed: int = 0, M: int = 2) -> dict:
    """An input file for network ``name``: random X, weights, and Y for mse, sized by running
    the naive twins forward."""
    layers, shape, shapes = NETWORKS[name]
    rng = np.random.default_rng(seed)
    data = {"X": rng.normal(size=(M, *shape)).tolist(), "layers": layers, "loss": "mse", "lr": 0.1}
    values = {"X": np.array(data["X"])}
    for layer in placed(layers):
        x = values[layer.input]
        weights = ()
        if layer.weighted:
            number = layer.place.number
            if layer.type == "batchnorm":
                weights = (rng.uniform(0.5, 1.5, size=x.shape[1]), rng.normal(size=x.shape[1]) * 0.1)
            else:
                W, B = shapes[number]
                weights = (rng.normal(size=W) * 0.6, rng.normal(size=B) * 0.1)
            data[f"W{number}"], data[f"B{number}"] = (w.tolist() for w in weights)
        others = [values[name] for name in layer.reads]
        values[layer.output] = ROWS[layer.type].twin.forward(x, *weights, *others, **options(layer))
    output = values[layer.output].shape
    data["Y"] = rng.normal(size=output if output[1:] != (1,) else output[:1]).tolist()
    return data


def problem_of(name: str, seed: int = 0, M: int = 2):
    return problem_from_dict(network_input(name, seed, M))


by_network = pytest.mark.parametrize("name", sorted(NETWORKS))


# -- the four networks agree with the oracles ------------------------------------------------


@by_network
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_trace_agrees_with_the_naive_twins(name, seed):
    problem = problem_of(name, seed, M=1 + seed)
    trace = run(problem)
    expected = naive_pass(problem)
    assert {stage.name for stage in trace.stages} == set(expected)
    for stage_name, value in expected.items():
        assert_allclose(trace[stage_name], problem.present(stage_name, value), **ORACLE, err_msg=stage_name)


@by_network
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_trace_agrees_with_torch_autograd(torch, name, seed):
    problem = problem_of(name, seed, M=1 + seed)
    trace = run(problem)
    expected = torch_pass(torch, problem)
    forks = problem.network.forks
    assert forks, "every one of these networks forks somewhere"
    for fork in forks:  # the sums, as autograd adds them up
        assert f"dL_d{fork}" in expected
    for stage_name, value in expected.items():
        assert_allclose(trace[stage_name], problem.present(stage_name, value), **TORCH, err_msg=stage_name)
    assert len(expected) >= len(problem.network.layers) + 1 + len(problem.network.params)


@by_network
def test_every_gradient_agrees_with_central_differences(name):
    checks = check(problem_of(name, 3), eps=1e-5, rtol=5e-7, atol=5e-9)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


@by_network
def test_training_gives_the_traced_gradients(name):
    problem = problem_of(name, 4)
    network, weights = problem.network, problem.general_weights()
    traced = network.forward_backward(problem.general_X(), problem.general_target, weights)
    trained = network.forward_backward(problem.general_X(), problem.general_target, weights, tracing=False)
    for p in network.params:
        np.testing.assert_array_equal(trained[f"dL_d{p}"], traced[f"dL_d{p}"], err_msg=p)
    assert trained["L"] == traced["L"]


# -- names, sums and their parts ----------------------------------------------------------------


def test_the_basic_block_is_named_as_the_issue_writes_it():
    trace = run(problem_of("basic-block"))
    forward = [stage.name for stage in trace.stages if stage.section == "forward"]
    outputs = [name for name in forward if name[0] in "ZASF" and not name.startswith(("mu", "sigmasq", "xhat"))]
    assert outputs[:7] == ["Z1", "Z2", "A2", "Z3", "Z4", "S4", "A4"]
    assert trace.stage("S4").equation == "Z4 + X"
    assert list(trace.problem.network.forks) == ["X"]


def test_the_downsampling_block_reads_x_again_and_adds_z4():
    trace = run(problem_of("downsampling"))
    network = trace.problem.network
    layers = {layer.output: layer for layer in network.layers}
    assert layers["Z5"].input == "X" and layers["Z5"].type == "conv"
    assert layers["S6"].input == "Z6" and layers["S6"].reads == ("Z4",)
    assert layers["A6"].input == "S6"
    assert "Z5 is made from X, not from Z4 (the layer before it)" in trace.annotations["Z5"].before


def test_a_fork_shows_each_path_and_their_sum():
    trace = run(problem_of("two-branch"))
    assert set(trace.problem.network.forks) == {"X", "A1", "F"}
    parts = ["dL_dA1_via_Z2", "dL_dA1_via_S2"]
    for part in parts:
        assert part in trace
    np.testing.assert_array_equal(trace["dL_dA1"], trace[parts[0]] + trace[parts[1]])
    stage = trace.stage("dL_dA1")
    assert stage.rule.chain == "∂L/∂A1 = ∂L/∂A1 via Z2 + ∂L/∂A1 via S2"
    # A path's chain rule starts at the last fork on its way back (F), or at L.
    assert trace.stage("dL_dA1_via_Z2").rule.chain.startswith("∂L/∂A1 via Z2 = ∂L/∂F · ∂F/∂C3")
    # The parts come before their sum, and the sum before the layer that made A1 goes on.
    order = [stage.name for stage in trace.stages]
    assert order.index("dL_dA1_via_S2") < order.index("dL_dA1_via_Z2") < order.index("dL_dA1") < order.index("dL_dZ1")
    # Each sum is the last of its matrix's gradients: the paths' parts, all sent back first.
    assert order[-len(trace.problem.network.params) - 1] == "dL_dX"


def test_explain_of_a_summed_entry_shows_the_paths_terms():
    trace = run(problem_of("two-branch"))
    explanation = explain(trace, "dL_dA1[0,1,2,3]")
    assert [term.factors[0].symbol for term in explanation.terms] == ["dL/dA1 via Z2", "dL/dA1 via S2"]
    assert explanation.value == pytest.approx(float(trace["dL_dA1"][0, 1, 2, 3]), rel=1e-12, abs=1e-15)
    part = explain(trace, "dL_dA1_via_S2[0,1,2,3]")
    assert part.value == pytest.approx(float(trace["dL_dA1_via_S2"][0, 1, 2, 3]), rel=1e-12, abs=1e-15)


def test_a_concat_splits_its_gradient_by_channel():
    trace = run(problem_of("densenet"))
    np.testing.assert_array_equal(trace["C1"][:, :2], trace["A1"])
    np.testing.assert_array_equal(trace["C1"][:, 2:], trace["X"] if "X" in trace else trace.problem.X)
    np.testing.assert_array_equal(trace["dL_dC1_via_S2" if False else "dL_dC1_via_C2"], trace["dL_dC2"][:, 3:])


def test_verify_names_a_forgotten_path_at_a_fork():
    trace = run(problem_of("two-branch"))
    answers = json.loads(json.dumps({name: np.asarray(trace[name]).tolist() for name in ("dL_dA1",)}))
    answers["dL_dA1"] = np.asarray(trace["dL_dA1_via_Z2"]).tolist()  # the path via S2 left out
    (verdict,) = verify(trace, answers)
    assert verdict.status == "wrong"
    assert "fork_path_missing" in [d.id for d in verdict.diagnosis]
    assert any("without its path via S2" in d.message for d in verdict.diagnosis)


# -- the diagram -------------------------------------------------------------------------------


def test_the_page_draws_the_graph_with_links_to_the_stages():
    from cnntrace.render import html

    trace = run(problem_of("basic-block"))
    page = html.render(trace)
    figure = page[page.index('<figure class="graph"'):page.index("</figure>")]
    assert figure.count('class="node') == len(trace.problem.network.layers) + 2  # X, the layers, L
    assert 'class="edge skip"' in figure  # X → S4 arcs over the block
    steps = {name: i for i, name in enumerate(stage.name for stage in trace.stages)}
    assert f'<a href="#stage-{steps["S4"]}">' in figure
    assert f'<a href="#stage-{steps["dL_dX"]}">' in figure  # the sum under X


def test_the_markdown_export_draws_a_mermaid_flowchart():
    from cnntrace.render import markdown

    text = markdown.render(run(problem_of("downsampling")))
    chart = text[text.index("```mermaid"):]
    chart = chart[:chart.index("```\n", 3)]
    for line in ("flowchart LR", "X --> Z5", "Z6 --> S6", "Z4 --> S6", "S6 --> A6", 'Z5["Z5: conv"]'):
        assert line in chart
    assert 'sum_X{{"dL/dX = dL/dX via Z1 + dL/dX via Z5"}}' in chart


def test_a_straight_list_has_no_diagram():
    from cnntrace.render import html, markdown

    trace = run(problem_from_dict(json.loads((SAMPLE.parent / "reference.json").read_text())))
    assert "mermaid" not in markdown.render(trace)
    assert "graph" not in html.render(trace).split("<main>")[1].split("</main>")[0]


# -- the command line ---------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def test_every_command_works_on_the_sample(tmp_path):
    for args in (["step", SAMPLE], ["step", SAMPLE, "-f", "json"], ["step", SAMPLE, "-f", "markdown"],
                 ["step", SAMPLE, "-f", "latex"], ["step", SAMPLE, "-f", "csv"], ["check", SAMPLE],
                 ["explain", SAMPLE, "dL_dX[0,1,2]"], ["sheet", SAMPLE], ["sheet", SAMPLE, "--key", "-f", "latex"],
                 ["train", SAMPLE, "-n", "3"], ["init", "--like", SAMPLE, "--seed", "1"],
                 ["init", "--like", SAMPLE, "--hand", "--seed", "1"],
                 ["step", SAMPLE, "--html", tmp_path / "page.html"]):  # fmt: skip
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.stderr)
    answers = json.loads(invoke("step", SAMPLE, "-f", "json").stdout)
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    result = invoke("verify", SAMPLE, tmp_path / "answers.json")
    assert result.exit_code == 0, result.stderr
    made = invoke("init", "--like", SAMPLE, "--seed", "2", "-o", tmp_path / "like.json")
    assert made.exit_code == 0, made.stderr
    assert invoke("step", tmp_path / "like.json").exit_code == 0


def test_the_schema_describes_input_and_the_merges():
    schema = json.loads(invoke("schema").stdout)
    text = json.dumps(schema)
    assert '"add"' in text and '"concat"' in text and '"input"' in text


def base(layers, X=(2, 4, 4)) -> dict:
    rng = np.random.default_rng(0)
    return {"X": rng.normal(size=X).tolist(), "layers": layers, "loss": "mse", "Y": [0.0],
            "W1": rng.normal(size=(2, 2, 3, 3)).tolist(), "B1": [0.0, 0.0], "W2": [[0.1]] * 32, "B2": [0.0]}  # fmt: skip


BAD = {
    "later": ([{"type": "conv", "padding": 1}, {"type": "add", "from": "A1"}, "relu", "flatten", "dense"],
              "layers[1].from", "A1 is made by layers[2]"),
    "itself": ([{"type": "conv", "padding": 1}, {"type": "add", "from": "S1"}, "flatten", "dense"],
               "layers[1].from", "S1 is made by layers[1]"),
    "unknown": ([{"type": "conv", "padding": 1}, {"type": "add", "from": "Z7"}, "flatten", "dense"],
                "layers[1].from", "no matrix Z7 before this layer; there are X, Z1"),
    "not-a-name": ([{"type": "conv", "padding": 1}, {"type": "add", "from": "W1"}, "flatten", "dense"],
                   "layers[1].from", "expected the name of an earlier matrix"),
    "input-later": ([{"type": "conv", "padding": 1, "input": "Z2"}, "flatten", "dense"],
                    "layers[0].input", "Z2 is made by layers[2]"),
    "shapes": ([{"type": "conv"}, {"type": "add", "from": "X"}, "flatten", "dense"],
               "layers[1].from", "add of Z1 (2×2×2) and X (2×4×4): the shapes must match exactly"),
    "concat-sizes": ([{"type": "conv"}, {"type": "concat", "from": "X"}, "flatten", "dense"],
                     "layers[1].from", "concat of Z1's 2×2 maps and X's 4×4"),
    "no-from": ([{"type": "conv", "padding": 1}, "add", "flatten", "dense"], "layers[1]", "add needs 'from'"),
    "two-merges": ([{"type": "conv", "padding": 1}, {"type": "add", "from": "X"}, {"type": "add", "from": "X"},
                    "flatten", "dense"], "layers[2]", "already has a merge after it"),
    "dangling": ([{"type": "conv", "padding": 1}, {"type": "conv", "padding": 1, "input": "X"}, "flatten", "dense"],
                 "layers[0]", "no later layer reads Z1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_graphs_are_one_line_naming_the_file_and_the_key(tmp_path, case):
    layers, key, fragment = BAD[case]
    path = tmp_path / "net.json"
    path.write_text(json.dumps(base(layers)))
    result = invoke("step", path)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and key in lines[0] and fragment in lines[0], lines[0]


def test_the_quiz_asks_for_each_path_and_then_the_sum():
    trace = run(problem_from_dict(json.loads(SAMPLE.read_text())))
    names = ["dL_dX_via_S4", "dL_dX_via_Z1", "dL_dX"]
    lines = [" ".join(repr(float(v)) for v in np.ravel(trace[name])) for name in names]
    lines[2] = " ".join(repr(float(v)) for v in np.ravel(trace["dL_dX_via_Z1"]))  # the path via S4 forgotten
    result = runner.invoke(app, ["quiz", str(SAMPLE), "--only", ",".join(names), "--tries", "1"],
                           input="\n".join(lines) + "\n")  # fmt: skip
    assert result.exit_code == 1, result.stderr  # not all right
    assert result.stdout == "score 2/3\n"
    assert "without its path via S4" in result.stderr


@pytest.mark.parametrize("value", [None, 5, ["X"], "x" * 10_000, "dL_dX"])
def test_an_input_that_is_not_a_matrix_name_is_refused(tmp_path, value):
    path = tmp_path / "net.json"
    path.write_text(json.dumps(base([{"type": "conv", "padding": 1, "input": value}, "flatten", "dense"])))
    result = invoke("step", path)
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "layers[0].input: expected the name of an earlier matrix" in line and len(line) < 400
