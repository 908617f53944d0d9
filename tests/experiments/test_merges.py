"""experiments.merges: what trained evolving models merge, per class, from the command line."""

import pytest
import torch
from torch_geometric.data import Batch

import experiments.merges as merges
from segmentation.cli._common import run_main
from segmentation.data.datasets import VOCSegmentation, write_synthetic_voc
from segmentation.data.loading import SuperpixelDataset
from segmentation.data.transforms import SuperpixelGraph
from segmentation.engine.checkpoint import load_checkpoint, model_from_checkpoint
from tests.helpers import run

TINY = ["--n-segments", "12", "--width", "4", "--hidden", "4", "--batch-size", "4",
        "--no-progress", "--threads", "1", "--epochs", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    write_synthetic_voc(root, 4, 5, size=(32, 32), seed=0)
    evolving, stack = tmp_path_factory.mktemp("evolving"), tmp_path_factory.mktemp("stack")
    assert run("train", ["--data", str(root), "--out", str(evolving),
                         "--graph-model", "evolving", *TINY]) == 0
    assert run("train", ["--data", str(root), "--out", str(stack), *TINY]) == 0
    return root, evolving / "best.pt", stack / "best.pt"


def test_table_row_is_the_regions_of_the_model_in_evaluation_mode(runs, capsys):
    root, checkpoint, _ = runs
    assert run_main(lambda: merges.main([str(checkpoint), "--data", str(root),
                                         "--split", "val", "--batch-size", "2"])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith(f"| {checkpoint} |")
    # The same model, one image at a time.
    model = model_from_checkpoint(load_checkpoint(checkpoint)).eval()
    config = model.config
    graphs = SuperpixelDataset(VOCSegmentation(root, split="val", num_classes=config.num_classes),
                               SuperpixelGraph(n_segments=config.n_segments, add_features=False))
    superpixels = regions = 0
    with torch.no_grad():
        for i in range(len(graphs)):
            out = model.forward_batch(Batch.from_data_list([graphs[i]]))
            superpixels += out.hierarchy.num_nodes[0]
            regions += out.hierarchy.num_nodes[-1]
    assert lines[2].split(" | ")[1] == f"{regions / superpixels:.3f}"


def test_a_model_that_does_not_merge_is_refused_in_one_line(runs, capsys):
    root, _, stack = runs
    assert run_main(lambda: merges.main([str(stack), "--data", str(root)])) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--graph-model evolving" in err[0] and str(stack) in err[0]
