"""ONNX export (``repro.export``): the graph ONNX Runtime runs is the model's function, a wrong graph is
caught and located at its node, and bad input gets one line and leaves nothing behind."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import reference  # noqa: E402
import repro  # noqa: E402
from repro.equivalence import randomize_  # noqa: E402
from repro.export import (  # noqa: E402
    ExportError, check, export, main, max_opset, node_scopes, recommended_exporter, run_session, session,
)


def randomized(name: str, size: int) -> nn.Module:
    """A registered model with every parameter and buffer redrawn (timm's zero gammas would hide a branch)."""
    model = reference.create(name) if ":" in name else repro.create_model(name)
    return randomize_(model, (2, 3, size, size)).eval()


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def resnet18_onnx(tmp_path_factory):
    model = randomized("resnet18", 64)
    path = tmp_path_factory.mktemp("onnx") / "resnet18.onnx"
    return model, export(model, path, input_size=(1, 3, 64, 64))


def test_the_exporter_is_the_one_torch_recommends():
    dynamo = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    assert recommended_exporter() == ("dynamo" if dynamo is not None and dynamo.default is True else "torchscript")


def test_export_runs_the_same_function_in_onnx_runtime(resnet18_onnx):
    model, result = resnet18_onnx
    report = check(model, result.path)
    assert report.equivalent, str(report)
    assert [c.kind for c in report.inputs] == ["normal", "normal x8", "uniform"]
    assert all(c.max_abs <= c.allowed for c in report.inputs)
    assert all(c.torch_fp32_error > 0 for c in report.inputs)  # the calibration measured something


# One model per family, ours and a reference; small inputs (export cost depends on the graph, not the size).
# timm:tf_efficientnet_b0 at an odd size: TF "same" padding, asymmetric at stride 2, evaluated at export.
# The slow ones are each family's second side: every family is covered once without them.
FAMILIES = [("torchvision:resnet18", 32), pytest.param("efficientnet_b0", 32, marks=pytest.mark.slow),
            ("timm:tf_efficientnet_b0", 65), ("densenet121", 32),
            pytest.param("torchvision:densenet121", 32, marks=pytest.mark.slow), ("mobilenetv3_small_050", 32),
            pytest.param("torchvision:mobilenet_v3_small", 32, marks=pytest.mark.slow), ("resnet20", 32)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, export result) per (name, size), exported once for the module's tests."""
    cache: dict[tuple[str, int], tuple] = {}

    def get(name: str, size: int):
        if (name, size) not in cache:
            model = randomized(name, size)
            path = tmp_path_factory.mktemp("family") / "m.onnx"
            cache[name, size] = model, export(model, path, input_size=(1, 3, size, size))
        return cache[name, size]

    return get


@pytest.mark.parametrize("name, size", FAMILIES)
def test_every_family_exports_to_the_same_function(name, size, exported):
    model, result = exported(name, size)
    report = check(model, result.path)
    assert report.equivalent, str(report)


def test_tf_same_padding_graph_refuses_another_resolution(exported):
    """timm computes TF "same" padding from the input size at run time; the export fixes it for the
    exported size, and the graph's input shape says so: ONNX Runtime refuses another size rather
    than padding it wrong (the same function at 65 px is the family test above)."""
    _model, result = exported("timm:tf_efficientnet_b0", 65)
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(InvalidArgument, match="(?i)dimension"):
        run_session(session(result.path), torch.randn(1, 3, 64, 64))


def test_a_planted_mismatch_is_located_at_its_node(resnet18_onnx, tmp_path):
    """One weight of one convolution in layer3 altered in the saved graph: the check fails, and the
    first divergence is that node, named by its module (the exporter folds bn1 into conv1)."""
    model, result = resnet18_onnx
    bad, node = _plant(result.path, tmp_path, "layer3.1")
    weight_name = node.input[1]
    report = check(model, bad)
    assert not report.equivalent
    assert report.divergence is not None, str(report)
    assert report.divergence.node == node.name
    assert report.divergence.module == node_scopes(node)[-1]
    assert weight_name in report.divergence.weights
    assert "first divergence at module layer3.1" in str(report)


def _plant(path, tmp_path, scope: str):
    """A copy of the ONNX file at ``path`` with one weight of the first Conv inside ``scope`` altered."""
    proto = onnx.load(str(path))
    node = next(n for n in proto.graph.node if n.op_type == "Conv" and node_scopes(n)[-1].startswith(scope))
    weight = next(i for i in proto.graph.initializer if i.name == node.input[1])
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 0.5
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    return bad, node


def test_torchscript_exporter_graphs_are_checked_and_located_too(tmp_path):
    """The exporter older torch recommends (node names /layer3/layer3.1/conv1/Conv, BatchNorm folded
    into the Conv under the conv's name, torchvision's one ReLU called twice per block)."""
    model = randomized("torchvision:resnet18", 32)
    result = export(model, tmp_path / "ts.onnx", input_size=(1, 3, 32, 32), exporter="torchscript")
    assert check(model, result.path).equivalent
    bad, node = _plant(result.path, tmp_path, "layer3.1")
    report = check(model, bad)
    assert not report.equivalent and report.divergence is not None, str(report)
    assert (report.divergence.module, report.divergence.node) == ("layer3.1.conv1", node.name)


def test_dynamic_batch_is_checked_at_two_batch_sizes(tmp_path):
    model = randomized("resnet20", 32)
    result = export(model, tmp_path / "dyn.onnx", input_size=(1, 3, 32, 32), dynamic_batch=True)
    assert result.dynamic_batch and result.input_size[0] == 2  # traced at 2: torch.export specializes size 1
    report = check(model, result.path)
    assert report.equivalent, str(report)
    assert {c.shape[0] for c in report.inputs} == {1, 2, 3}
    assert run_session(session(result.path), torch.randn(5, 3, 32, 32)).shape == (5, 10)


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = repro.create_model("resnet20").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export(model, tmp_path / "m.onnx", input_size=(1, 3, 32, 32))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- bad input: one line, nothing half-written ------------------------------------------------------

class _FixedBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("bias", torch.zeros(2, 1, 1, 1))  # broadcasts only against a batch of 2

    def forward(self, x):
        return self.conv(x) + self.bias


# An operator no exporter can express, defined through torch.library.Library (every supported torch has it;
# torch.library.custom_op arrives in 2.4): a real kernel, and a Meta one for torch.export's fake tensors.
_LIBRARY = torch.library.Library("repro_test", "DEF")
_LIBRARY.define("opaque(Tensor x) -> Tensor")
_LIBRARY.impl("opaque", lambda x: x.clone(), "CompositeExplicitAutograd")
_LIBRARY.impl("opaque", lambda x: torch.empty_like(x), "Meta")


class _Opaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.ops.repro_test.opaque(self.conv(x))


# What the recommended exporter cannot do, in its own words: the dynamo exporter writes opset 18 and up (17
# fails its down-conversion) and names the operator it has no ONNX function for; the TorchScript exporter (older
# torch's default) stops below onnx's newest opset and names the operator's namespace.
if recommended_exporter() == "dynamo":
    BAD_OPSET, BAD_OPSET_MESSAGE = 17, "cannot write CifarResNet at opset 17"
    OPAQUE_MESSAGE = "No ONNX function found for <OpOverload(op='repro_test.opaque'"
else:
    BAD_OPSET, BAD_OPSET_MESSAGE = max_opset(), "cannot be exported by the torchscript exporter: Unsupported"
    OPAQUE_MESSAGE = "unrecognized namespace repro_test::opaque"


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda: "resnet5O", {}, "unknown hand-written model 'resnet5O'"),
    (lambda: "timm:resnet5O", {}, "timm has no model 'resnet5O'"),
    (lambda: repro.create_model("resnet20"), {"opset": 99}, "opset 99: the installed onnx"),
    (lambda: repro.create_model("resnet20"), {"opset": BAD_OPSET}, BAD_OPSET_MESSAGE),
    (_Opaque, {}, OPAQUE_MESSAGE),
    (_FixedBatch, {"dynamic_batch": True}, "its forward fixes the batch size"),
    # The TorchScript exporter, asked for by name: its graph keeps the symbolic batch it was given, and shape
    # inference finds the fixed one; its opset range ends below onnx's newest.
    (_FixedBatch, {"dynamic_batch": True, "exporter": "torchscript"}, "its forward fixes the batch size"),
    (lambda: repro.create_model("resnet20"), {"opset": max_opset(), "exporter": "torchscript"},
     "cannot be exported by the torchscript exporter: Unsupported"),
])
def test_bad_export_is_one_line_and_leaves_the_old_file(make, kwargs, message, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ExportError) as err:
        export(make(), out, input_size=(1, 3, 32, 32), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert out.read_bytes() == b"previous" and leftovers(tmp_path) == []


def test_unwritable_output_paths(tmp_path):
    model = repro.create_model("resnet20")
    (tmp_path / "a_file").write_text("")
    for out, message in [(tmp_path / "missing" / "m.onnx", "does not exist"),
                         (tmp_path / "a_file" / "m.onnx", "does not exist"),
                         (tmp_path, "is a directory")]:
        with pytest.raises(ExportError, match=message):
            export(model, out, input_size=(1, 3, 32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_command_line_exports_and_checks(tmp_path, capsys):
    out = tmp_path / "r20.onnx"
    assert main(["resnet20", "--out", str(out), "--dynamic-batch", "--check"]) == 0
    text = capsys.readouterr().out
    assert "same function in ONNX Runtime" in text and "Nx3x32x32" in text
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0].dim_param


@pytest.mark.parametrize("args, message", [
    (["nope"], "unknown hand-written model 'nope'"),
    (["resnet20", "--opset", "99"], "opset 99"),
    (["resnet20", "--opset", "x"], "invalid int value"),
])
def test_command_line_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and leftovers(tmp_path) == []
