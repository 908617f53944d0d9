"""What trained structure-evolving models merge on a labelled split, per class.

For every checkpoint (a model trained with ``--graph-model evolving``), runs
the model in evaluation mode (deterministic merges) on every image of the
split and counts, over the whole split
(:func:`segmentation.models.evolving.merge_counts`): regions of the last level
per superpixel, the share of each class's superpixels merged into a region of
more than one superpixel, and the share of superpixels in a region whose
majority label is another. Prints a markdown table.

Example::

    python -m experiments.merges --data runs/mosaics/data --split test \\
        runs/mosaics/evolving-seed0/best.pt runs/mosaics/evolving-seed1/best.pt
"""

from __future__ import annotations

import sys

from segmentation.cli._common import ArgumentParser, CLIError, positive_int, run_main


def split_merge_counts(data: str, checkpoint: str, split: str = "test", batch_size: int = 8):
    """:class:`segmentation.models.evolving.MergeCounts` of a checkpoint over a split."""
    import torch

    from segmentation.data.datasets import VOCSegmentation
    from segmentation.data.loading import SuperpixelDataset, group_by_size, pad_collate
    from segmentation.data.transforms import SuperpixelGraph
    from segmentation.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from segmentation.models.evolving import EvolvingSegmenter, merge_counts, superpixel_labels

    model = model_from_checkpoint(load_checkpoint(checkpoint), "cpu")
    if not isinstance(model, EvolvingSegmenter):
        raise CLIError(f"{checkpoint}: not a model trained with --graph-model evolving")
    config = model.config
    dataset = VOCSegmentation(data, split=split, num_classes=config.num_classes)
    if len(dataset) == 0:
        raise CLIError(f"--split {split!r} of {data!r} lists no images")
    graphs = SuperpixelDataset(dataset, SuperpixelGraph(
        n_segments=config.n_segments, compactness=config.compactness, add_features=False))
    model.eval()
    generator = torch.Generator().manual_seed(0)
    total = None
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            chunk = [graphs[i] for i in range(start, min(start + batch_size, len(graphs)))]
            for group in group_by_size(chunk):
                batch = pad_collate(group)
                out = model.forward_batch(batch, generator)
                labels = superpixel_labels(batch.mask, out.superpixels, out.num_nodes,
                                           config.num_classes)
                counts = merge_counts(out.hierarchy, labels, config.num_classes)
                total = counts if total is None else total.add(counts)
    return total, dataset.class_names


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    parser.add_argument("--data", required=True, metavar="DIR", help="VOC-layout folder")
    parser.add_argument("--split", default="test", help="split file (default: test)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    rows = []
    for checkpoint in args.checkpoints:
        counts, class_names = split_merge_counts(args.data, checkpoint, args.split,
                                                 args.batch_size)
        merged = counts.merged_per_class.double() / counts.per_class.clamp(min=1).double()
        rows.append((checkpoint, counts, merged))
    print("| checkpoint | regions per superpixel | in a region of another label | "
          + " | ".join(f"{name} merged" for name in class_names) + " |")
    print("|---" * (3 + len(class_names)) + "|")
    for checkpoint, counts, merged in rows:
        shares = " | ".join(f"{100 * float(share):.1f} %" for share in merged)
        print(f"| {checkpoint} | {counts.regions / counts.superpixels:.3f} "
              f"| {100 * counts.in_region_of_other_label / counts.superpixels:.2f} % "
              f"| {shares} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
