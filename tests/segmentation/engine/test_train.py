"""Training loop pieces: mixed precision, frozen BatchNorm, loss normalisation, sampling."""

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch_geometric.data import Batch

from graphlstm import GraphLSTM
from segmentation.data.datasets import SyntheticScenes
from segmentation.engine.distributed import init_distributed_mode, reduce_across_processes
from segmentation.engine.train import (
    EpochSampler,
    TrainConfig,
    TrainingDiverged,
    autocast_dtype,
    build_graphs,
    build_lr_scheduler,
    set_train_mode,
    train,
    train_one_epoch,
    training_step,
)
from segmentation.models.segmenter import (
    GraphLSTMSegmenter,
    ModelConfig,
    batch_inputs,
    segmentation_loss,
)


@pytest.fixture(scope="module")
def batch():
    graphs = build_graphs(SyntheticScenes(3, size=(40, 48), seed=5), n_segments=30)
    batch = Batch.from_data_list(graphs)
    batch.mask[0, :12] = 255  # ignored pixels, unevenly spread over the images
    batch.mask[2, :, :5] = 255
    return batch


def make_model(backbone="small", seed=0, **kw):
    torch.manual_seed(seed)
    return GraphLSTMSegmenter(ModelConfig(num_classes=6, width=6, hidden=5, backbone=backbone,
                                          **kw))


# CUDA where there is one (scripts/gpu_check_train.sh runs these there).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backbone", ["small", "resnet18"])
def test_amp_loss_is_finite_and_close_to_float32(batch, backbone, device):
    low = autocast_dtype(torch.device(device))
    assert low == {"cpu": torch.bfloat16, "cuda": torch.float16}[device]
    batch = batch.to(device)
    model = make_model(backbone).to(device).eval()
    with torch.no_grad():
        reference = segmentation_loss(model(*batch_inputs(batch)), batch.mask)
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen.setdefault(name, []).append((args[0].dtype, output[0].dtype
                                              if isinstance(output, tuple) else output.dtype))
        return hook

    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(record("backbone"))
    for layer in model.modules():
        if isinstance(layer, GraphLSTM):
            layer.register_forward_hook(record("graph"))
    with torch.no_grad(), torch.autocast(device, dtype=low):
        out = model(*batch_inputs(batch))
        loss = segmentation_loss(out, batch.mask)
    # autocast is really on (the backbone computes in low precision) ...
    assert seen["backbone"][0][1] == low
    # ... while the Graph LSTM recurrence and the order's score are float32
    assert len(seen["graph"]) == 2
    assert all(d == (torch.float32, torch.float32) for d in seen["graph"])
    assert out.node_score.dtype == torch.float32
    assert torch.isfinite(loss)
    assert float(loss) == pytest.approx(float(reference), rel=2e-2)
    assert float(loss) != float(reference)  # it did run in lower precision


@pytest.mark.parametrize("device", DEVICES)
def test_amp_training_steps_run_and_learn(batch, device):
    batch = batch.to(device)
    model = make_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    # float16 needs loss scaling (CUDA); bfloat16 has float32's range (CPU)
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" else None
    before = copy.deepcopy(model.state_dict())
    set_train_mode(model)
    losses = [training_step(model, batch, optimizer, scaler, amp=True) for _ in range(6)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert {"backbone.body.0.0.weight", "graph_lstm.layers.1.0.lin_h.weight"} <= set(changed)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_bn_keeps_statistics_but_trains_affine_weights(batch, freeze):
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    bn = model.backbone.body[0][1]
    mean, weight = bn.running_mean.clone(), bn.weight.detach().clone()
    set_train_mode(model, freeze_bn=freeze)
    assert model.training and bn.training == (not freeze)
    training_step(model, batch, optimizer)
    assert torch.equal(bn.running_mean, mean) == freeze
    assert not torch.equal(bn.weight, weight)


def test_training_step_is_the_mean_loss_over_valid_pixels(batch):
    # The step divides summed losses by the (all-reduced) count of valid pixels:
    # in one process that is exactly the mean cross-entropy, value and gradient.
    model, reference = make_model(), make_model()
    set_train_mode(model)
    set_train_mode(reference)
    sgd = torch.optim.SGD(model.parameters(), lr=0.0)
    loss = training_step(model, batch, sgd)
    out = reference(*batch_inputs(batch))
    mask = batch.mask
    expected = F.cross_entropy(out.logits, mask, ignore_index=255) + \
        F.cross_entropy(out.confidence_logits, mask, ignore_index=255)
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-6)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        if q.grad is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_first_graph_layer_state_projections_are_frozen():
    model = make_model()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"graph_lstm.layers.0.0.lin_h.weight",
                      "graph_lstm.layers.0.0.lin_fn.weight"}
    assert all(p.requires_grad for p in make_model(graph_layers=0).parameters())


@pytest.mark.parametrize("n", [8, 10, 13])
@pytest.mark.parametrize("world", [2, 4])
def test_processes_together_see_the_global_batches_of_one_process(n, world):
    batch_size, dataset = 4, list(range(n))

    def batches(num_replicas, rank, epoch):
        sampler = EpochSampler(dataset, num_replicas=num_replicas, rank=rank, seed=300_009)
        sampler.set_epoch(epoch)
        return [b.tolist() for b in DataLoader(dataset, batch_size=batch_size // num_replicas,
                                               sampler=sampler)]

    for epoch in (0, 3):
        single = batches(1, 0, epoch)
        # The same permutation as DataLoader(shuffle=True, generator=seeded) in earlier
        # versions (and so the same data order for one process).
        g = torch.Generator().manual_seed(300_009 + epoch)
        old = [b.tolist() for b in DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                              generator=g)]
        assert single == old
        shares = [batches(world, r, epoch) for r in range(world)]
        steps = {len(s) for s in shares}
        assert len(steps) == 1
        if n % world == 0:  # no padding: exactly the same global batches
            for step, global_batch in enumerate(single):
                union = sorted(i for s in shares for i in s[step])
                assert union == sorted(global_batch)
        else:  # padded by repeating the first items, as DistributedSampler
            seen = sorted(i for s in shares for b in s for i in b)
            assert set(seen) == set(dataset) and len(seen) == world * -(-n // world)


def test_distributed_helpers_without_torchrun(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert init_distributed_mode("cpu") == torch.device("cpu")
    assert torch.equal(reduce_across_processes(torch.tensor([3, 4])), torch.tensor([3, 4]))


@pytest.mark.parametrize("device, env, needle", [
    ("cpu", {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "MASTER_ADDR"),
    ("cuda:0", {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
                "MASTER_PORT": "1"}, "--device cuda"),
    ("meta", {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
              "MASTER_PORT": "1"}, "cpu (gloo) or cuda (nccl)"),
    ("cpu", {"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
             "MASTER_PORT": "1"}, "WORLD_SIZE must be an integer"),
])
def test_distributed_setup_errors(device, env, needle, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=re.escape(needle)):
        init_distributed_mode(device)


# --------------------------------------------------------------------------- the epoch loop


def test_train_one_epoch_steps_the_poly_schedule_once_per_step(batch):
    graphs = batch.to_data_list()
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    config = TrainConfig(lr=0.5, lr_schedule="poly")
    lr_scheduler = build_lr_scheduler(optimizer, config, total_steps=4)
    seen = []
    optimizer.register_step_pre_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
    loader = DataLoader(graphs, batch_size=1, collate_fn=Batch.from_data_list)
    loss = train_one_epoch(model, optimizer, lr_scheduler, loader, torch.device("cpu"), 0)
    assert len(seen) == 3 and lr_scheduler.last_epoch == 3 and loss > 0
    # DeepLab's poly schedule, written out: lr * (1 - t / T) ** 0.9.
    assert seen == pytest.approx([0.5 * (1 - t / 4) ** 0.9 for t in range(3)], rel=1e-12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 - 3 / 4) ** 0.9)


def test_a_non_finite_loss_raises_training_diverged_with_where_and_lr(batch):
    broken = batch.clone()
    broken.image = torch.full_like(broken.image, float("nan"))
    model = make_model(order="raster")  # (ordered by confidence it stops at the NaN score)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.25)
    lr_scheduler = build_lr_scheduler(optimizer, TrainConfig(lr=0.25, lr_schedule="constant"),
                                      total_steps=10)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(TrainingDiverged) as caught:
        train_one_epoch(model, optimizer, lr_scheduler, [broken], torch.device("cpu"), 3)
    err = caught.value
    assert (err.epoch, err.step, err.lr) == (3, 0, 0.25) and err.loss != err.loss  # NaN
    assert isinstance(err, RuntimeError)
    # The message counts epochs from 1 (index 3 is the fourth epoch).
    assert "epoch 4" in str(err) and "step 0" in str(err) and "0.25" in str(err)
    # The optimiser did not step: the weights are those from before.
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]), name


def test_checkpoints_hold_the_scheduler_and_resume_needs_it(batch, tmp_path):
    graphs = batch.to_data_list()
    config = ModelConfig(num_classes=6, width=4, hidden=4, n_segments=30)
    train_config = TrainConfig(epochs=2, batch_size=2, lr=0.01)
    train(config, train_config, graphs, graphs[:1], tmp_path, progress=False, log=lambda _: None)
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    steps = 2 * 2  # two epochs of ceil(3 / 2) steps
    assert payload["lr_scheduler_state"]["last_epoch"] == steps
    assert payload["optimizer_state"]["param_groups"][0]["lr"] == 0.0  # poly at T
    del payload["lr_scheduler_state"]
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="lr_scheduler_state"):
        train(config, TrainConfig(epochs=3, batch_size=2, lr=0.01), graphs, graphs[:1],
              tmp_path / "again", resume=tmp_path / "old.pt", progress=False,
              log=lambda _: None)
