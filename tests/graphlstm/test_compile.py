"""torch.compile, to_hetero, flow and TorchScript: the convolution contract of PyG.

The compile checks follow PyG's test_compile_conv.py and test_compile_dynamic.py:
compiled in a fresh process (so that the first call of a kernel is a compiled
call), graphs of changing sizes, values and gradients equal to eager.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch_geometric.data import HeteroData
from torch_geometric.nn import to_hetero
from torch_geometric.utils import to_undirected

from graphlstm import GraphLSTM, GraphLSTMStack
from tests.helpers import ROOT as REPO_ROOT

ROOT = str(REPO_ROOT)

COMPILE_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from torch._dynamo.utils import counters
    from torch_geometric.utils import to_undirected
    import graphlstm
    from graphlstm import GraphLSTM

    device = sys.argv[1]

    class Net(torch.nn.Module):
        # One layer without a previous state (graphlstm::recurrence) and one with
        # a state and edge weights (graphlstm::gated_recurrence on the CPU).
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 8)
            self.first = GraphLSTM(8, 8)
            self.second = GraphLSTM(8, 8)

        def forward(self, x, edge_index, edge_weight, score):
            x = self.lin(x).relu()
            out, state = self.first(x, edge_index, score=score)
            out, _ = self.second(out, edge_index, edge_weight, score=score, state=state)
            return out.tanh()

    def graph(n, seed):
        gen = torch.Generator().manual_seed(seed)
        edge_index = to_undirected(torch.randint(0, n, (2, 2 * n), generator=gen), num_nodes=n)
        return [t.to(device) for t in (torch.randn(n, 5, generator=gen), edge_index,
                torch.rand(edge_index.size(1), generator=gen) + 0.1,
                torch.rand(n, generator=gen))]

    report = {}
    for engine in ("auto", "torch"):
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        model = Net().to(device)
        compiled = torch.compile(model)
        graphs, errors = [], []
        with graphlstm.use_backend(engine):
            for step, n in enumerate((40, 57, 73)):
                inputs = graph(n, step)
                values = []
                for run in (compiled, model):
                    out = run(*inputs)
                    grads = torch.autograd.grad(out.square().mean(), list(model.parameters()),
                                                materialize_grads=True)
                    values.append((out, grads))
                (got, got_grads), (expected, expected_grads) = values
                errors.append(max([(got - expected).abs().max().item()] + [
                    (g - e).abs().max().item() for g, e in zip(got_grads, expected_grads)]))
                graphs.append(counters["stats"]["unique_graphs"])
        report[engine] = {"errors": errors, "graphs": graphs}
    print("REPORT " + json.dumps(report))
''')


def _run_fresh(script: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=1500)
    assert out.returncode == 0, out.stderr[-4000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_compile_from_the_first_call_on_graphs_of_changing_size(device):
    """In a fresh process, ``torch.compile(model)`` runs from its first call, on both
    engines; three graphs of different sizes give the eager values and gradients
    (float32, 1e-6), and only the second size recompiles (sizes become dynamic)."""
    report = _run_fresh(COMPILE_SCRIPT, device)
    for engine, result in report.items():
        assert max(result["errors"]) < 1e-6, (engine, result)
        first, second, third = result["graphs"]
        assert first > 0
        assert second <= 2 * first, (engine, result)  # one recompile per graph at most
        assert third == second, (engine, result)  # no recompile after that


# --------------------------------------------------------------------------
# to_hetero: several relations into one node type.
# --------------------------------------------------------------------------


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = GraphLSTM(-1, 6, return_state=False)

    def forward(self, x, edge_index):
        return self.conv(x, edge_index)


def test_to_hetero_sums_per_relation_layers_with_return_state_false():
    gen = torch.Generator().manual_seed(0)
    data = HeteroData()
    data["paper"].x = torch.randn(12, 4, generator=gen)
    data["author"].x = torch.randn(7, 4, generator=gen)
    relations = [("paper", "cites", "paper"), ("paper", "similar", "paper"),
                 ("author", "knows", "author")]
    for rel in relations:
        n = data[rel[0]].num_nodes
        data[rel].edge_index = to_undirected(torch.randint(0, n, (2, 15), generator=gen),
                                             num_nodes=n)
    torch.manual_seed(0)
    model = to_hetero(_Net(), data.metadata(), aggr="sum")
    out = model(data.x_dict, data.edge_index_dict)
    # By hand: one layer per relation, the two relations into "paper" summed.
    convs = {rel: model.conv[f"{rel[0]}__{rel[1]}__{rel[2]}"] for rel in relations}
    expected_paper = sum(convs[rel](data["paper"].x, data[rel].edge_index)
                         for rel in relations[:2])
    expected_author = convs[relations[2]](data["author"].x, data[relations[2]].edge_index)
    torch.testing.assert_close(out["paper"], expected_paper)
    torch.testing.assert_close(out["author"], expected_author)
    # Each is a GraphLSTM of its own: the per-relation outputs differ.
    assert not torch.allclose(*(convs[rel](data["paper"].x, data[rel].edge_index)
                                for rel in relations[:2]))


def test_return_state_is_checked_and_changes_only_the_output():
    with pytest.raises(TypeError, match="return_state"):
        GraphLSTM(3, 4, return_state=1)
    torch.manual_seed(0)
    layer = GraphLSTM(3, 4)
    plain = GraphLSTM(3, 4, return_state=False)
    plain.load_state_dict(layer.state_dict())
    x, edge_index = torch.randn(6, 3), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    assert torch.equal(plain(x, edge_index), layer(x, edge_index)[0])


# --------------------------------------------------------------------------
# flow="target_to_source": edge_index[1] sends.
# --------------------------------------------------------------------------


def _flow_case():
    gen = torch.Generator().manual_seed(3)
    n = 15
    edge_index = torch.randint(0, n, (2, 40), generator=gen)  # directed: direction matters
    return (torch.randn(n, 3, generator=gen, dtype=torch.float64), edge_index,
            torch.rand(40, generator=gen, dtype=torch.float64) + 0.1,
            torch.rand(n, generator=gen, dtype=torch.float64))


def _layers():
    torch.manual_seed(0)
    forward = GraphLSTM(3, 4).double()
    reverse = GraphLSTM(3, 4, flow="target_to_source").double()
    reverse.load_state_dict(forward.state_dict())
    return forward, reverse


def test_target_to_source_equals_the_flipped_edge_index():
    x, edge_index, weight, score = _flow_case()
    forward, reverse = _layers()
    expected = forward(x, edge_index.flip(0), weight, score=score)[0]
    assert not torch.allclose(expected, forward(x, edge_index, weight, score=score)[0])
    torch.testing.assert_close(reverse(x, edge_index, weight, score=score)[0], expected)
    schedule = reverse.schedule(edge_index, x.size(0), score=score)
    torch.testing.assert_close(reverse(x, edge_index, weight, schedule=schedule)[0], expected)


def test_target_to_source_with_edge_index_and_sparse_adjacency():
    from torch_geometric import EdgeIndex

    x, edge_index, weight, score = _flow_case()
    forward, reverse = _layers()
    n = x.size(0)
    expected = forward(x, edge_index.flip(0), score=score)[0]
    typed = EdgeIndex(edge_index, sparse_size=(n, n))
    torch.testing.assert_close(reverse(x, typed, score=score)[0], expected)
    # A sparse adj_t holds edge_index column (j, i) at entry (i, j), under either flow.
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), weight, (n, n))
    expected = forward(x, edge_index.flip(0), weight, score=score)[0]
    torch.testing.assert_close(reverse(x, adj_t, score=score)[0], expected)


def test_unknown_flow_is_refused():
    with pytest.raises((ValueError, AssertionError), match="flow|source_to_target"):
        GraphLSTM(3, 4, flow="sideways")


# --------------------------------------------------------------------------
# TorchScript: one clear error.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: GraphLSTM(3, 4), lambda: GraphLSTMStack(3, 4)])
def test_torchscript_raises_a_clear_error(make):
    module = make()
    with pytest.raises(RuntimeError, match="TorchScript.*torch.compile"):
        torch.jit.script(module)
    layer = GraphLSTM(3, 4)
    with pytest.raises(RuntimeError, match="TorchScript"):
        layer.jittable()
