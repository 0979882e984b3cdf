"""Property-based equivalence: random valid configurations, built in both the hand-written family
and timm with the same settings, ported and compared as the equivalence tests do."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro.equivalence import compare_ported, randomize_
from repro.porting import port_weights

PROPERTY_SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Odd sizes included: stride-2 convolutions and pooling must agree on how they round.
resolutions = st.integers(min_value=33, max_value=64)
batches = st.integers(min_value=2, max_value=3)


def assert_ported_equivalent(ref, ours, resolution, batch):
    size = (batch, 3, resolution, resolution)
    randomize_(ref, size)
    report = port_weights(ref, ours)
    result = compare_ported(ref, ours, report.target_to_source, size)
    result.assert_equivalent(rtol=1e-5)


@PROPERTY_SETTINGS
@given(
    layers=st.lists(st.integers(min_value=1, max_value=3), min_size=4, max_size=4),
    bottleneck=st.booleans(),
    num_classes=st.integers(min_value=1, max_value=20),
    resolution=resolutions,
    batch=batches,
)
def test_resnet_configurations(layers, bottleneck, num_classes, resolution, batch):
    from timm.models import resnet as timm_resnet

    from repro.models import resnet

    ref = timm_resnet.ResNet(
        block=timm_resnet.Bottleneck if bottleneck else timm_resnet.BasicBlock, layers=layers, num_classes=num_classes
    )
    ours = resnet.ResNet(resnet.Bottleneck if bottleneck else resnet.BasicBlock, layers, num_classes=num_classes)
    assert_ported_equivalent(ref, ours, resolution, batch)


def assert_ported_with(spec, ref, ours, resolution, batch):
    """As above, with the rules registered for ``spec`` (timm's EfficientNet and MobileNetV3 classes
    serve several rule sets, so the rules are named rather than looked up by type)."""
    from repro.registry import REFERENCES

    size = (batch, 3, resolution, resolution)
    randomize_(ref, size)
    report = port_weights(ref, ours, REFERENCES[spec].rules)
    compare_ported(ref, ours, report.target_to_source, size).assert_equivalent(rtol=1e-5)


multipliers = st.sampled_from([0.5, 0.75, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5])


@PROPERTY_SETTINGS
@given(width=multipliers, depth=st.sampled_from([0.5, 0.8, 1.0, 1.1, 1.3]), resolution=resolutions, batch=batches)
def test_efficientnet_multipliers(width, depth, resolution, batch):
    from timm.models.efficientnet import _gen_efficientnet

    from repro.models.efficientnet import EfficientNet

    ref = _gen_efficientnet("efficientnet_b0", channel_multiplier=width, depth_multiplier=depth, pretrained=False,
                            drop_rate=0.0, drop_path_rate=0.0)
    ours = EfficientNet(width=width, depth=depth, drop_rate=0.0, drop_path_rate=0.0)
    assert_ported_with("timm:efficientnet_b0", ref, ours, resolution, batch)


@PROPERTY_SETTINGS
@given(arch=st.sampled_from(["small", "large"]), width=st.sampled_from([0.5, 0.75, 1.0, 1.25]),
       resolution=resolutions, batch=batches)
def test_mobilenetv3_width_multipliers(arch, width, resolution, batch):
    from timm.models.mobilenetv3 import _gen_mobilenet_v3

    from repro.models.mobilenet import MobileNetV3

    ref = _gen_mobilenet_v3(f"mobilenetv3_{arch}_100", channel_multiplier=width, pretrained=False, drop_rate=0.0)
    ours = MobileNetV3(arch, width, head="conv", drop_rate=0.0)
    assert_ported_with(f"timm:mobilenetv3_{arch}_100", ref, ours, resolution, batch)


@PROPERTY_SETTINGS
@given(
    growth=st.sampled_from([8, 12, 16, 24]),
    blocks=st.lists(st.integers(min_value=1, max_value=4), min_size=4, max_size=4),
    bn_size=st.integers(min_value=1, max_value=4),
    resolution=resolutions,
    batch=batches,
)
def test_densenet_configurations(growth, blocks, bn_size, resolution, batch):
    from timm.models.densenet import DenseNet as TimmDenseNet

    from repro.models.densenet import DenseNet

    ref = TimmDenseNet(growth_rate=growth, block_config=tuple(blocks), bn_size=bn_size)
    ours = DenseNet(growth_rate=growth, block_config=blocks, num_init_features=2 * growth, bn_size=bn_size)
    assert_ported_with("timm:densenet121", ref, ours, resolution, batch)
