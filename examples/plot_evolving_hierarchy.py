"""
Regions that merge: the structure-evolving Graph LSTM
=====================================================

The structure-evolving Graph LSTM (Liang et al., CVPR 2017) does not keep its
graph: after every Graph LSTM layer, neighbouring nodes whose forget gates say
they belong together merge, and the next layer runs on the merged regions in
their own confidence order. The merge probabilities are supervised by the
masks (two superpixels of one label should merge), next to the segmentation
loss.

This example trains the evolving segmentation model on 32 texture mosaics of
scikit-image's brick, grass and gravel photographs (every crop brought to one
brightness, so only texture tells them apart) for 80 steps on the CPU, then
draws what it merges on a held-out mosaic. A model trained this briefly
merges coarsely: its merge probabilities are higher within a texture than
across, but not yet far apart, and one wrong edge joins two textures. The
README's picture is the same drawing for a model trained for 20 epochs on 96
mosaics of 128×128 (``python -m experiments.mosaics``), whose regions follow
every texture.
"""

import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Batch

from graphlstm.coarsening import majority_label
from segmentation import ModelConfig, SuperpixelGraph, pad_collate
from segmentation.data.datasets import MOSAIC_CLASSES, generate_mosaic
from segmentation.models.evolving import EvolvingSegmenter, model_loss, superpixel_labels
from segmentation.visualize.hierarchy import plot_hierarchy

torch.manual_seed(0)
to_graph = SuperpixelGraph(n_segments=100)
graphs = [to_graph(generate_mosaic(seed, 96)) for seed in range(32)]
print(f"{len(graphs)} mosaics, {graphs[0].num_nodes} superpixels in the first")

# %%
# Training: the per-pixel losses plus the merge loss (``model_loss``), Adam,
# batches of 8. In training mode the evolution step samples its proposals and
# accepts them by Metropolis-Hastings; in evaluation mode it is deterministic.
config = ModelConfig(num_classes=len(MOSAIC_CLASSES), n_segments=100, graph_model="evolving")
model = EvolvingSegmenter(config)
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
loader = DataLoader(graphs, batch_size=8, shuffle=True, collate_fn=pad_collate,
                    generator=torch.Generator().manual_seed(0))
evolution = torch.Generator().manual_seed(0)
model.train()
for epoch in range(20):
    for batch in loader:
        loss = model_loss(model.forward_batch(batch, evolution), batch.mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch}: loss {loss.item():.3f}")

# %%
# A held-out mosaic: the merge probabilities of its superpixel edges, split by
# whether the two superpixels carry one label, and the regions of every level,
# coloured by their update rank on that level (first: dark).
image, mask = generate_mosaic(10_000, 96)
graph = Batch.from_data_list([to_graph((image, mask))])
model.eval()
with torch.no_grad():
    hierarchy = model.forward_batch(graph).hierarchy
labels = superpixel_labels(graph.mask, graph.superpixels, graph.ptr.diff(), len(MOSAIC_CLASSES))
source, target = hierarchy.edge_indices[0]
same = labels[source] == labels[target]
prob = hierarchy.merge_probs[0]
print(f"merge probability: {prob[same].mean():.2f} within a texture, "
      f"{prob[~same].mean():.2f} across textures")
print("nodes per level:", " -> ".join(map(str, hierarchy.num_nodes)))
region = hierarchy.assignments[-1]
region_label = majority_label(labels, region, hierarchy.num_nodes[-1])
print(f"superpixels in a region of their own texture: "
      f"{(region_label[region] == labels).float().mean():.0%}")
figure = plot_hierarchy(image, graph.superpixels[0], hierarchy,
                        title="regions per level: "
                        + " -> ".join(map(str, hierarchy.num_nodes)))
