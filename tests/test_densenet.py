"""DenseNet-BC: the bottleneck layer, the memory-efficient path, and the seed's DenseNet without bottleneck."""

import pytest
import torch

import reference
import repro
from repro.equivalence import randomize_, train_step
from repro.models.densenet import DenseLayer, DenseNet
from repro.porting import PortError, port_weights
from repro.report import Options
from repro.report.densenet_mobilenet import densenet_mobilenet_errata, memory_efficient_check
from repro.seed.code import SeedDenseNet

SMALL = dict(growth_rate=8, block_config=(2, 3, 2, 2), num_init_features=16)  # a DenseNet-BC small enough to run often
SIZE = (2, 3, 32, 32)


def _pair(**kwargs):
    plain = DenseNet(**SMALL)
    randomize_(plain, SIZE)
    efficient = DenseNet(**SMALL, memory_efficient=True, **kwargs)
    efficient.load_state_dict(plain.state_dict())
    return plain, efficient


def _assert_steps_equal(a, b):
    assert torch.equal(a.output, b.output)
    assert torch.equal(a.input_grad, b.input_grad)
    assert a.grads.keys() == b.grads.keys() and all(torch.equal(a.grads[k], b.grads[k]) for k in a.grads)
    differ = [k for k in a.buffers if not torch.equal(a.buffers[k], b.buffers[k])]
    assert not differ, f"buffers differ: {differ[:4]}"


def test_bc_layer_is_bottleneck_then_3x3():
    model = repro.create_model("densenet121")
    layer = model.features.denseblock2.denselayer3
    assert layer.conv1.kernel_size == (1, 1) and layer.conv1.in_channels == 128 + 2 * 32
    assert layer.conv1.out_channels == 4 * 32  # bn_size * growth_rate
    assert layer.conv2.kernel_size == (3, 3) and (layer.conv2.in_channels, layer.conv2.out_channels) == (128, 32)
    # Transitions halve the channels: 64 + 6*32 = 256 -> 128 after block 1.
    assert model.features.transition1.conv.out_channels == 128
    assert model.num_features == 1024
    with torch.device("meta"):  # the widths without the cost of initializing 28.7M parameters
        assert repro.create_model("densenet161").num_features == 2208
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_memory_efficient_gives_identical_outputs_gradients_and_running_stats():
    plain, efficient = _pair()
    x, weight = torch.randn(SIZE), torch.randn(2, 1000)
    _assert_steps_equal(train_step(plain, x, weight), train_step(efficient, x, weight))


def test_memory_efficient_path_really_recomputes():
    plain, efficient = _pair()
    layer = efficient.features.denseblock1.denselayer2
    calls = []
    original = layer._bottleneck
    layer._bottleneck = lambda features, update_running_stats=True: (calls.append(update_running_stats),
                                                                   original(features, update_running_stats))[1]
    out = efficient.train()(torch.randn(SIZE, requires_grad=True))
    assert calls == [True]
    out.sum().backward()
    assert calls == [True, False]  # the backward pass recomputed it, without updating running statistics
    calls.clear()
    with torch.no_grad():  # nothing needs a gradient: the plain path, computed once
        efficient(torch.randn(SIZE))
    assert calls == [True]


def test_memory_efficient_equal_in_eval_mode_too():
    plain, efficient = _pair()
    x = torch.randn(SIZE, requires_grad=True)
    outs = []
    for model in (plain.eval(), efficient.eval()):
        model.zero_grad()
        x.grad = None
        out = model(x)
        out.square().sum().backward()
        outs.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert all(torch.equal(g, h) for g, h in zip(outs[0][2], outs[1][2], strict=True))


def test_memory_efficient_versus_torchvision_option():
    """Recorded fact: torchvision's checkpoint updates the bottleneck BN's running statistics twice; ours does not."""
    ours, tv = (memory_efficient_check(source, **SMALL) for source in ("ours", "torchvision"))
    assert ours["running stats equal"] and ours["parameter grads equal"] and ours["outputs equal"]
    assert ours["batches one step adds to a bottleneck BN (plain / checkpointed)"] == "1 / 1"
    assert tv["parameter grads equal"] and not tv["running stats equal"]
    assert tv["batches one step adds to a bottleneck BN (plain / checkpointed)"] == "1 / 2"


def test_memory_efficient_needs_the_bottleneck():
    with pytest.raises(ValueError, match="bottleneck=True"):
        DenseLayer(16, 8, bottleneck=False, memory_efficient=True)
    with pytest.raises(ValueError, match="compression"):
        DenseNet(**SMALL, compression=0.0)


def _seed_to_ours(key: str) -> str:
    """The seed's tensor names (dense_blocks / transitions lists, Sequential indices) to the hand-written model's."""
    stem = {"features.0.": "features.conv0.", "features.1.": "features.norm0.", "final_bn.": "features.norm5."}
    for old, new in stem.items():
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith("dense_blocks."):
        _, block, _, layer, index, rest = key.split(".", 5)
        module = {'0': 'norm2', '2': 'conv2'}[index]
        return f"features.denseblock{int(block) + 1}.denselayer{int(layer) + 1}.{module}.{rest}"
    if key.startswith("transitions."):
        _, block, _, index, rest = key.split(".", 4)
        return f"features.transition{int(block) + 1}.{ {'0': 'norm', '2': 'conv'}[index]}.{rest}"
    return key


def test_bottleneck_false_is_the_seeds_densenet():
    seed = SeedDenseNet(SMALL["growth_rate"], SMALL["block_config"], SMALL["num_init_features"])
    randomize_(seed, SIZE)
    ours = DenseNet(**SMALL, bottleneck=False)
    ours.load_state_dict({_seed_to_ours(k): v for k, v in seed.state_dict().items()})  # strict: every key, every shape
    x = torch.randn(SIZE)
    with torch.no_grad():
        assert torch.equal(seed.eval()(x), ours.eval()(x))
    seed_step, our_step = train_step(seed, x, torch.ones(2, 1000)), train_step(ours, x, torch.ones(2, 1000))
    assert torch.equal(seed_step.output, our_step.output) and torch.equal(seed_step.input_grad, our_step.input_grad)
    # At full size: the seed's network is the no-bottleneck one, not DenseNet-BC.
    full = sum(p.numel() for p in SeedDenseNet().parameters())
    assert full == sum(p.numel() for p in repro.create_model("densenet121", bottleneck=False).parameters())
    assert full > sum(p.numel() for p in repro.create_model("densenet121").parameters())


def test_wrong_depth_cannot_port():
    with pytest.raises(PortError, match=r"denseblock3\.denselayer25"):
        port_weights(reference.create("timm:densenet169"), repro.create_model("densenet121"))


def test_densenet_errata_are_measured():
    rows = {r.claim: r for r in densenet_mobilenet_errata(Options(models=("densenet121",)))}
    bottleneck = rows["DenseNet-BC: each dense layer is BN -> ReLU -> Conv(1x1) -> Conv(3x3)"]
    assert not bottleneck.holds and "10,869,096" in bottleneck.measured and "7,978,856" in bottleneck.measured
    assert not rows["`bn_size=4` sets the bottleneck width (bn_size x growth_rate)"].holds
    assert not any(r.section == "4.2" for r in rows.values())  # MobileNet rows only when MobileNets are selected


def test_fewer_parameters_at_matched_accuracy():
    """'参数量更少' is decided by its own source, the DenseNet paper's one-recipe ImageNet comparison; torchvision's
    metadata, which compares recipes too, is context, and says that it depends on the weights chosen (with the
    first weights DenseNet-201 reaches ResNet-50 with fewer parameters; with the best, no DenseNet reaches it).
    '泛化能力更强' is not decided by validation accuracy."""
    from repro.report import Outcome
    from repro.report.densenet_mobilenet import fewer_parameters_errata

    fewer, generalization = fewer_parameters_errata()
    assert fewer.holds and fewer.measured.startswith("at matched accuracy, DenseNet paper (Huang et al. 2017)")
    first, best = fewer.note.split("; with each architecture's best torchvision weights: ")
    assert "the smallest DenseNet at least as accurate, DenseNet-201, 20.01M, 76.90% (IMAGENET1K_V1): fewer " \
        "parameters" in first
    assert best.startswith("ResNet-50 25.56M, 80.86% (IMAGENET1K_V2); no DenseNet reaches it"), best
    assert generalization.outcome is Outcome.UNDECIDED and generalization.decide


class _SummingBlock(torch.nn.Module):
    """A ResNet-style stack read as a 'dense block': each layer adds to the running sum instead of concatenating."""

    def __init__(self, layers: int = 3):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(layers))

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return x


def test_dense_connectivity_sees_concatenation_and_would_see_a_sum():
    from repro.report.densenet_mobilenet import dense_connectivity

    summing = _SummingBlock()
    seen = dense_connectivity(summing, [(summing, list(summing.layers))], size=8)
    # only the first layer reads "every earlier output" (there is none); the block neither concatenates nor keeps x
    assert seen == {"layers": 3, "fed_all_earlier": 1, "blocks": 1, "concatenated": 0, "input_kept": 0}
    seed = SeedDenseNet(8, (2, 3), 16)
    seen = dense_connectivity(seed, [(b, list(b.layers)) for b in seed.dense_blocks], size=16)
    assert seen == {"layers": 5, "fed_all_earlier": 5, "blocks": 2, "concatenated": 2, "input_kept": 2}


def test_seed_densenet_description_rows():
    from repro.report.densenet_mobilenet import dense_connection_errata

    rows = {e.claim.split(" (")[0]: e for e in dense_connection_errata("densenet121")}
    assert all(e.holds for e in rows.values()) and len(rows) == 4
    assert "the seed's DenseNet: 58 of 58; ours (densenet121): 58 of 58" in rows[
        "each layer receives the feature maps of all preceding layers as input"].measured
    compression = rows["compression in the transition layers keeps the channel count down"]
    assert "1,024 channels reach the classifier, 7,978,856 parameters" in compression.measured
    assert "without (compression 1), 1,920 channels" in compression.measured and "Table 2" in compression.note
