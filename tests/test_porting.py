"""Strict, atomic porting: every tensor accounted for, every shape checked, nothing half-written."""

import pytest
import torch
from torch import nn

import reference
import repro
from repro.porting import PortError, PortRules, plan_port, port_weights
from repro.ports.resnet import TIMM_RESNET

from helpers import assert_state_unchanged, state_snapshot


def test_report_accounts_for_every_tensor():
    src = reference.create("torchvision:resnet50")
    dst = repro.create_model("resnet50")
    report = port_weights(src, dst)
    assert len(report.pairs) == len(src.state_dict()) == len(dst.state_dict()) == 320
    assert {p.source_key for p in report.pairs} == set(src.state_dict())
    assert {p.target_key for p in report.pairs} == set(dst.state_dict())
    assert all(torch.equal(dst.state_dict()[p.target_key], src.state_dict()[p.source_key]) for p in report.pairs)
    assert "ported 320 tensors" in str(report)
    assert len(report.to_frame()) == 320


def test_mismatched_depth_raises_and_changes_nothing():
    src = reference.create("timm:resnet34")
    dst = repro.create_model("resnet18")
    before = state_snapshot(dst)
    with pytest.raises(PortError) as err:
        port_weights(src, dst)
    message = str(err.value)
    assert "layer1.2.conv1.weight" in message  # a source tensor resnet18 has no room for
    assert "the target is unchanged" in message
    assert_state_unchanged(dst, before)


def test_shape_mismatch_names_both_sides():
    src = reference.create("timm:resnet18")
    dst = repro.create_model("resnet18", num_classes=10)
    before = state_snapshot(dst)
    with pytest.raises(PortError, match=r"fc\.weight \[1000, 512\] -> fc\.weight \[10, 512\]"):
        port_weights(src, dst)
    assert_state_unchanged(dst, before)


def test_bottleneck_into_basic_block_raises():
    src = reference.create("timm:resnet50")
    dst = repro.create_model("resnet34")
    with pytest.raises(PortError, match="no such tensor in target"):
        port_weights(src, dst)


def test_plain_net_has_no_room_for_projection_shortcuts():
    src = reference.create("timm:resnet18")
    dst = repro.create_model("plain18")
    with pytest.raises(PortError, match=r"layer2\.0\.downsample\.0\.weight"):
        port_weights(src, dst)


def test_unknown_pair_of_types_has_no_rules():
    with pytest.raises(PortError, match="no porting rules"):
        port_weights(nn.Linear(2, 2), repro.create_model("resnet18"))


def test_from_state_dict_needs_rules():
    src = reference.create("timm:resnet18").state_dict()
    with pytest.raises(PortError, match="needs rules="):
        port_weights(src, repro.create_model("resnet18"))
    report = port_weights(src, repro.create_model("resnet18"), rules=TIMM_RESNET)
    assert len(report.pairs) == len(src)


class _Head(nn.Module):
    def __init__(self, conv: bool):
        super().__init__()
        self.proj = nn.Conv2d(8, 4, 1) if conv else nn.Linear(8, 4)


def test_linear_and_1x1_conv_port_with_a_recorded_reshape():
    rules = PortRules("test", "x", "y", ((r"(.*)", r"\1"),))
    linear, conv = _Head(conv=False), _Head(conv=True)
    report = port_weights(linear, conv, rules=rules)
    assert torch.equal(conv.proj.weight.flatten(1), linear.proj.weight)
    assert [p.target_key for p in report.transformed] == ["proj.weight"]
    assert "Linear -> 1x1 conv" in report.transformed[0].transform
    back = port_weights(conv, _Head(conv=False), rules=rules)
    assert "1x1 conv -> Linear" in back.transformed[0].transform


def test_two_sources_claiming_one_target_is_refused():
    rules = PortRules("collapse", "x", "y", ((r"layer1\.1\.(.*)", r"layer1.0.\1"), (r"(.*)", r"\1")))
    with pytest.raises(PortError, match="claimed by several source tensors"):
        plan_port(reference.create("timm:resnet18").state_dict(), repro.create_model("resnet18").state_dict(), rules)


def test_a_failure_while_copying_restores_the_target():
    src_model = reference.create("timm:resnet18")

    class ExplodingState(dict):
        armed = False

        def __getitem__(self, key):
            if self.armed and key.startswith("layer3"):
                raise RuntimeError("disk on fire")
            return super().__getitem__(key)

    src = ExplodingState(src_model.state_dict())
    src.armed = True  # plan_port iterates items(); the copy loop indexes, and fails half-way
    dst = repro.create_model("resnet18")
    before = state_snapshot(dst)
    with pytest.raises(RuntimeError, match="disk on fire"):
        port_weights(src, dst, rules=TIMM_RESNET)
    assert_state_unchanged(dst, before)


def test_from_reference_matches_spec_and_mode():
    src = reference.create("torchvision:resnet34").eval()
    ours = repro.from_reference("torchvision:resnet34", source=src)
    assert type(ours).__name__ == "ResNet" and not ours.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), src(x))
    with pytest.raises(ValueError, match="not both"):
        repro.from_reference("torchvision:resnet34", source=src, pretrained=True)


def test_plain_mapping_and_callable_drive_a_port():
    src, dst = nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2))
    report = port_weights(src, dst, {"weight": "0.weight", "bias": "0.bias"})
    assert torch.equal(dst[0].weight, src.weight) and report.rules == "explicit mapping of 2 keys"
    other = nn.Sequential(nn.Linear(3, 2))

    def prefix(key):
        return f"0.{key}"

    assert port_weights(src, other, prefix).rules == "prefix"
    assert torch.equal(other[0].bias, src.bias)


def test_a_mapping_that_misses_or_invents_a_key_changes_nothing():
    src, dst = nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2))
    before = state_snapshot(dst)
    with pytest.raises(PortError, match=r"bias \[2\] \(no rule matches\)"):
        port_weights(src, dst, {"weight": "0.weight"})
    with pytest.raises(PortError, match=r"gamma \(named by the mapping; no such tensor in source\)"):
        port_weights(src, dst, {"weight": "0.weight", "bias": "0.bias", "gamma": "0.bias"})
    with pytest.raises(TypeError, match="str -> str"):
        port_weights(src, dst, {"weight": 0})
    assert_state_unchanged(dst, before)


def test_tensors_to_keep_are_accounted_for_by_staying_as_they_are():
    src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    dst.register_buffer("index", torch.arange(4))
    report = port_weights(src, dst, {"weight": "weight", "bias": "bias"}, keep={"index"})
    assert report.kept == ("index",) and torch.equal(dst.index, torch.arange(4))
    assert "1 target tensors kept as they were" in str(report)
    before = state_snapshot(dst)
    with pytest.raises(PortError, match="target tensors nothing maps to"):
        port_weights(src, dst, {"weight": "weight", "bias": "bias"})
    src.register_buffer("index", torch.arange(4).flip(0))
    with pytest.raises(PortError, match=r"to keep as they are, yet mapped to:\n    index <- index"):
        port_weights(src, dst, {"weight": "weight", "bias": "bias", "index": "index"}, keep={"index"})
    with pytest.raises(PortError, match="keep names tensors Linear does not have: gamma"):
        port_weights(src, dst, {"weight": "weight", "bias": "bias"}, keep={"gamma"})
    assert_state_unchanged(dst, before)


@pytest.mark.parametrize("source, found", [
    ({"weight": [[0.0] * 3] * 2, "bias": torch.zeros(2)}, r"values that are not tensors \(1\), e\.g\. weight \(list\)"),
    ({0: torch.zeros(2, 3), "bias": torch.zeros(2)}, r"keys that are not names \(1\), e\.g\. 0"),
    ({"weight": torch.zeros(2, 3).to_sparse(), "bias": torch.zeros(2)},
     r"tensors without dense values \(meta or sparse\) \(1\), e\.g\. weight \(torch\.sparse_coo\)"),
    (nn.Linear(3, 2, device="meta"),
     r"source torch\.nn\.modules\.linear\.Linear has tensors without dense values \(meta or sparse\) \(2\)"),
])
def test_a_source_without_named_dense_tensors_is_refused_before_anything_is_copied(source, found):
    dst = nn.Linear(3, 2)
    before = state_snapshot(dst)
    with pytest.raises(PortError, match=found):
        port_weights(source, dst, {"weight": "weight", "bias": "bias"})
    assert_state_unchanged(dst, before)


def test_a_meta_target_is_refused_not_reported_as_ported():
    # Copying into a meta tensor does nothing and raises nothing: a port "into" one would report success.
    without = r"target torch\.nn\.modules\.linear\.Linear has tensors without dense values \(meta or sparse\) \(2\)"
    with pytest.raises(PortError, match=without):
        port_weights(nn.Linear(3, 2), nn.Linear(3, 2, device="meta"), {"weight": "weight", "bias": "bias"})


def test_other_kinds_of_number_are_refused_and_a_string_is_not_a_keep_list():
    dst = nn.Linear(3, 2)
    before = state_snapshot(dst)
    for dtype in (torch.bool, torch.complex64, torch.int64):
        source = {"weight": torch.zeros(2, 3, dtype=dtype), "bias": torch.zeros(2)}
        with pytest.raises(PortError, match=rf"kind-of-number mismatches .*\n    weight {dtype} -> weight"):
            port_weights(source, dst, {"weight": "weight", "bias": "bias"})
    for keep in ("bias", b"bias"):
        with pytest.raises(TypeError, match="keep must be a collection of target tensor names, got"):
            port_weights(nn.Linear(3, 2), dst, {"weight": "weight", "bias": "bias"}, keep=keep)
    # plan_port, public too, checks the same before pairing anything
    with pytest.raises(PortError, match=r"values that are not tensors \(1\)"):
        plan_port({"weight": [0.0], "bias": torch.zeros(2)}, dst.state_dict(), {"weight": "weight", "bias": "bias"})
    with pytest.raises(TypeError, match="target must be an nn.Module, got dict"):
        port_weights(nn.Linear(3, 2), {"weight": torch.zeros(2, 3)})
    assert_state_unchanged(dst, before)
    # A float of another precision is the same kind of number: it ports.
    port_weights({"weight": torch.ones(2, 3, dtype=torch.float64), "bias": torch.zeros(2)}, dst,
                 {"weight": "weight", "bias": "bias"})
    assert torch.equal(dst.weight, torch.ones(2, 3))
