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
