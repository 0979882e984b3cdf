"""``repro.verify`` with an ONNX file as the candidate (``repro.verify._onnx``, ``repro.onnx_graph``).

The candidates are this project's own hand-written ResNet-18 and MobileNetV3-Small (written otherwise
than timm's), exported by the tests themselves and then disguised as another framework's export would
be: every node, initializer and value renamed, the node list reordered (in another topological order,
so independent branches run in another order). Only the dataflow can pair them with timm's models.
A correct export is equivalent with every weighted node paired; each planted mistake is caught and
named at the renamed node where it lives; the file is only read.
"""

from __future__ import annotations

import hashlib
import inspect
import random
import warnings

import numpy as np
import pytest
import torch

onnxruntime = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

import reference  # noqa: E402
import repro  # noqa: E402
from repro.verify import _onnx as onnx_verification  # noqa: E402  (repro.verify is the function)
from repro.equivalence import randomize_  # noqa: E402
from repro.export import export, run_session, session  # noqa: E402
from repro.onnx_graph import intended, load, with_weights  # noqa: E402
from repro.verify import VerifyError, verify  # noqa: E402
from repro.verify.__main__ import main  # noqa: E402
from zoo.efficientnet_b0 import EfficientNetB0  # noqa: E402

SIZE = 32
RESNET, MOBILENET = "timm:resnet18", "timm:mobilenetv3_small_050"


def timm_resnet18() -> torch.nn.Module:
    return reference.create(RESNET)


# -- exports, disguised -----------------------------------------------------------------------------

def export_unfolded(model: torch.nn.Module, path) -> None:
    """The TorchScript exporter without constant folding: every BatchNorm stays a BatchNormalization node."""
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is deprecated, still there
        torch.onnx.export(model, (torch.randn(1, 3, SIZE, SIZE),), str(path), do_constant_folding=False, **legacy)


def exported(name: str, path, *, folded: bool = False) -> onnx.ModelProto:
    """A hand-written model (weights randomized, as a trained model's would be) exported to ``path``: by
    ``repro.export`` (the exporter torch recommends, which folds BatchNorm into the convolutions) or
    without folding."""
    model = randomize_(repro.create_model(name), (2, 3, SIZE, SIZE)).eval()
    if folded:
        export(model, path, input_size=(1, 3, SIZE, SIZE))
    else:
        export_unfolded(model, path)
    return onnx.load(str(path))


def disguised(proto: onnx.ModelProto, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``proto`` as another framework might have written it: every node, initializer and value renamed
    (names with dots and slashes), metadata dropped, and the nodes in another topological order.
    Returns it with the old -> new node names."""
    rng = random.Random(seed)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    values = [i.name for i in graph.input] + [i.name for i in graph.initializer]
    values += [v for n in graph.node for v in n.output]
    rename = {v: f"t.{k}/{rng.randrange(10 ** 6)}" for k, v in enumerate(dict.fromkeys(values)) if v}
    names = {n.name: f"net/op.{k}:{rng.randrange(10 ** 6)}" for k, n in enumerate(graph.node)}
    for node in graph.node:
        node.name = names[node.name]
        node.input[:] = [rename.get(v, v) for v in node.input]
        node.output[:] = [rename.get(v, v) for v in node.output]
        del node.metadata_props[:]
        node.doc_string = ""
    for value in list(graph.input) + list(graph.output) + list(graph.initializer):
        value.name = rename[value.name]
    del graph.value_info[:]
    del out.metadata_props[:]
    # Kahn's algorithm, picking a random ready node: another valid order of the same graph.
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(v in available for v in n.input)]
        node = rng.choice(ready)
        pending.remove(node)
        order.append(node)
        available.update(node.output)
    copies = [onnx.NodeProto() for _ in order]
    for copy, node in zip(copies, order, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    onnx.checker.check_model(out)
    return out, names


def has_another_order(proto: onnx.ModelProto) -> bool:
    """Whether the graph's nodes have more than one topological order (a chain has one: torch 2.2's
    TorchScript export of MobileNetV3, say, where each branch waits on the node before it)."""
    available = {i.name for i in proto.graph.input} | {i.name for i in proto.graph.initializer} | {""}
    pending = list(proto.graph.node)
    while pending:
        ready = [n for n in pending if all(v in available for v in n.input)]
        if len(ready) > 1:
            return True
        pending.remove(ready[0])
        available.update(ready[0].output)
    return False


def save(proto: onnx.ModelProto, path) -> str:
    onnx.save(proto, str(path))
    return str(path)


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def node(proto: onnx.ModelProto, op_type: str, scope: str) -> onnx.NodeProto:
    """The first ``op_type`` node of the TorchScript export whose name has ``scope`` in it."""
    return next(n for n in proto.graph.node if n.op_type == op_type and scope in n.name)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Unfolded exports of the hand-written ResNet-18 and MobileNetV3-Small, one each for the module."""
    directory = tmp_path_factory.mktemp("onnx")
    return {spec: exported(name, directory / f"{name}.onnx")
            for name, spec in (("resnet18", RESNET), ("mobilenetv3_small_050", MOBILENET))}


# -- correct exports ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [RESNET, MOBILENET])
def test_a_renamed_reordered_export_verifies_with_every_node_paired(spec, exports, tmp_path):
    original = exports[spec]
    proto, names = disguised(original)
    original_name = {new: old for old, new in names.items()}
    reordered = [original_name[n.name] for n in proto.graph.node] != [n.name for n in original.graph.node]
    assert reordered or not has_another_order(original)  # reordered, where the graph admits another order
    path = save(proto, tmp_path / "model.onnx")
    before = digest(path)
    report = verify(path, spec)
    assert report.equivalent, str(report)
    assert report.verdict == "EQUIVALENT" and not report.bit_exact  # never claimed for a file
    assert report.input_size == (1, 3, SIZE, SIZE)  # from the graph
    assert report.structure_matches and report.layers["ok"].all()
    assert report.levels["eval"].holds and report.levels["ONNX Runtime"].holds, str(report)
    assert report.levels["train step"].holds is None and "not applicable" in report.levels["train step"].detail
    # Every weighted node is paired, under its new name, and every use of an initializer is ported into.
    weighted = {n.name for n in proto.graph.node if n.op_type in ("Conv", "BatchNormalization", "Gemm")}
    assert set(report.layers["candidate"]) == weighted
    initializers = {i.name for i in proto.graph.initializer}
    uses = sum(v in initializers for n in proto.graph.node for v in n.input)
    norms = sum(n.op_type == "BatchNormalization" for n in proto.graph.node)  # + torch's num_batches_tracked
    assert len(report.port.pairs) == uses + norms
    assert digest(path) == before


def test_a_model_proto_is_verified_and_left_as_it_was(exports):
    proto, _ = disguised(exports[MOBILENET], seed=3)
    serialized = proto.SerializeToString()
    report = verify(proto, MOBILENET)
    assert report.equivalent, str(report)
    assert proto.SerializeToString() == serialized


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("folded")
    return exported("resnet18", directory / "resnet18.onnx", folded=True)


def test_a_folded_export_is_compared_with_the_reference_folded_the_same_way(folded, tmp_path):
    """The exporter torch recommends folds every BatchNorm into its convolution: the reference is folded
    the same way, the report says so and what that leaves unchecked."""
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    proto, _ = disguised(folded, seed=1)
    report = verify(save(proto, tmp_path / "folded.onnx"), RESNET)
    assert report.equivalent, str(report)
    note = next(n for n in report.notes if "folded" in n)
    assert "20 convolution -> BatchNorm pairs folded" in note and "is not checked" in note
    assert "optimize=False" in note  # how to export so that every BatchNorm is verified


def test_a_mistake_in_a_folded_export_is_still_named(folded, tmp_path):
    proto, names = disguised(folded, seed=2)
    relus = [n for n in proto.graph.node if n.op_type == "Relu"]
    wrong = relus[len(relus) // 2]
    wrong.op_type = "Sigmoid"
    report = verify(save(proto, tmp_path / "bad.onnx"), RESNET)
    assert not report.equivalent
    assert report.first_divergence == wrong.name, str(report)


def test_without_porting_the_file_s_own_weights_are_compared(tmp_path):
    """``port=False``: is this file that very model, weights and all? A folded file's weights carry the
    exporter's float32 arithmetic, so it is decided within a calibrated tolerance, and says so."""
    model = randomize_(timm_resnet18(), (2, 3, SIZE, SIZE)).eval()
    unfolded, folded = tmp_path / "unfolded.onnx", tmp_path / "folded.onnx"
    export_unfolded(model, unfolded)
    export(model, folded, input_size=(1, 3, SIZE, SIZE))
    report = verify(unfolded, model, port=False, wide_input_scale=None)
    assert report.equivalent and report.checks["eval output"].bit_exact and report.port is None, str(report)
    report = verify(folded, model, port=False, wide_input_scale=None)
    assert report.equivalent, str(report)
    assert "folded weights carry the exporter's float32 arithmetic" in str(report.tolerance)
    other = randomize_(timm_resnet18(), (2, 3, SIZE, SIZE), seed=1).eval()
    assert not verify(folded, other, port=False, wide_input_scale=None).equivalent


# -- planted mistakes, each named at its renamed node -----------------------------------------------------

def pads(proto):
    """A 3x3 convolution of layer 3 pads one pixel more at the top and left, one less at the bottom and right."""
    conv = node(proto, "Conv", "layer3.1/conv2")
    next(a for a in conv.attribute if a.name == "pads").ints[:] = [2, 2, 0, 0]
    return conv.name


def activation(proto):
    """One ReLU of layer 2 became an ELU."""
    relu = node(proto, "Relu", "layer2.0")
    relu.op_type = "Elu"
    return relu.name


def epsilon(proto):
    """One BatchNorm's epsilon is 1e-3 instead of 1e-5."""
    norm = node(proto, "BatchNormalization", "layer1.1/bn1")
    next(a for a in norm.attribute if a.name == "epsilon").f = 1e-3
    return norm.name


def transposed_weight(proto):
    """A 3x3 convolution's weight goes through a Transpose swapping its spatial axes (an exporter that
    transposes a kernel it should not): the mistake is the Transpose node, the convolution is computed there."""
    conv = node(proto, "Conv", "layer2.1/conv1")
    transpose = helper.make_node("Transpose", [conv.input[1]], ["kernel_transposed"], name="kernel_transpose",
                                 perm=[0, 1, 3, 2])
    conv.input[1] = "kernel_transposed"
    position = list(proto.graph.node).index(conv)
    proto.graph.node.insert(position, transpose)
    return transpose.name


def hard_sigmoid(proto):
    """A squeeze-excite gate is a sigmoid instead of a hard sigmoid."""
    gate = node(proto, "HardSigmoid", "features.4")
    gate.op_type = "Sigmoid"
    del gate.attribute[:]
    return gate.name


MISTAKES = [(pads, RESNET), (activation, RESNET), (epsilon, RESNET), (transposed_weight, RESNET),
            (hard_sigmoid, MOBILENET)]


@pytest.mark.parametrize("plant, spec", MISTAKES, ids=[m.__name__ for m, _ in MISTAKES])
def test_a_planted_mistake_is_named_at_its_renamed_node(plant, spec, exports, tmp_path):
    proto = onnx.ModelProto()
    proto.CopyFrom(exports[spec])
    where = plant(proto)
    proto, names = disguised(proto, seed=5)
    report = verify(save(proto, tmp_path / "bad.onnx"), spec)
    assert not report.equivalent
    assert report.verdict == "NOT EQUIVALENT"
    assert report.first_divergence == names[where], str(report)
    assert report.levels["eval"].first_divergence == names[where]
    assert names[where] in report.layers["candidate"].tolist() or names[where] in report.divergence_detail


def test_a_mistake_of_the_exported_model_is_named_at_its_node(tmp_path):
    """tests/zoo's EfficientNet-B0 pooling its squeeze-excite by max where timm takes the mean, exported.
    The graph writes every swish as a sigmoid and a product, values timm never computes on the way to
    the one it does: the first divergence is still the pooling node."""
    model = randomize_(EfficientNetB0(se_pool="max"), (2, 3, SIZE, SIZE)).eval()
    export_unfolded(model, tmp_path / "zoo.onnx")
    original = onnx.load(str(tmp_path / "zoo.onnx"))
    pool = next(n for n in original.graph.node if n.op_type in ("ReduceMax", "GlobalMaxPool"))
    proto, names = disguised(original, seed=11)
    report = verify(save(proto, tmp_path / "disguised.onnx"), "timm:efficientnet_b0")
    assert not report.equivalent
    assert report.first_divergence == names[pool.name], str(report)


class FixedBatch(torch.nn.Module):
    """Reshapes to a batch of two written as a number, as an export with a static batch does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)).reshape(2, 8))


def test_a_graph_with_a_fixed_batch_is_traced_and_scaled_up_at_that_batch(tmp_path):
    path = tmp_path / "fixed.onnx"
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(FixedBatch().eval(), (torch.randn(2, 3, SIZE, SIZE),), str(path), **legacy)
    report = verify(str(path), FixedBatch())
    assert report.equivalent and report.input_size[0] == 2, str(report)
    assert "eval output, input x8" in report.checks


def test_random_numbers_drawn_in_the_graph_are_drawn_by_torch():
    """A graph that draws random numbers in inference (drop-connect left on at export) runs, drawing them
    from torch's generator, so that the verification sees where they are drawn."""
    nodes = [helper.make_node("RandomUniformLike", ["x"], ["r"], name="noise", low=-1.0, high=3.0),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    graph = load(graph_of(nodes, [], 17))
    x = torch.zeros(2, 3, 5, 5)
    torch.manual_seed(0)
    first = graph(x)
    torch.manual_seed(0)
    assert torch.equal(graph(x), first) and -1.0 <= float(first.min()) and float(first.max()) < 3.0
    assert float(first.std()) > 0.5


def test_onnx_runtime_is_a_level_of_its_own(exports, tmp_path, monkeypatch):
    """ONNX Runtime runs the graph with the ported weights. Where it computes something else than the graph
    read by torch (here: one weight written back wrong), that level fails on its own and the verdict with
    it; where it cannot run the graph, the level is undecided and the graph's function decides."""
    path = save(disguised(exports[MOBILENET], seed=7)[0], tmp_path / "m.onnx")
    report = verify(path, MOBILENET, wide_input_scale=None)
    assert report.equivalent and report.levels["ONNX Runtime"].holds, str(report)
    assert "with the ported weights computes the reference's output" in report.levels["ONNX Runtime"].detail

    def one_weight_off(proto, module):
        written = with_weights(proto, module)
        weight = max(written.graph.initializer, key=lambda i: len(i.dims))
        values = numpy_helper.to_array(weight).copy()
        values.flat[0] += 1.0
        weight.CopyFrom(numpy_helper.from_array(values, weight.name))
        return written

    monkeypatch.setattr(onnx_verification, "with_weights", one_weight_off)
    report = verify(path, MOBILENET, wide_input_scale=None)
    assert report.levels["eval"].holds and report.levels["ONNX Runtime"].holds is False
    assert not report.equivalent and report.verdict == "NOT EQUIVALENT"
    assert "ONNX Runtime computes the graph otherwise" in str(report)

    def cannot_run(*args, **kwargs):
        raise onnxruntime.capi.onnxruntime_pybind11_state.Fail("no kernel for that operator")

    monkeypatch.setattr(onnx_verification, "check", cannot_run)
    report = verify(path, MOBILENET, wide_input_scale=None)
    assert report.equivalent and report.levels["ONNX Runtime"].holds is None
    assert "ONNX Runtime cannot run the graph: no kernel" in str(report)


# -- bad input: one line, nothing changed -------------------------------------------------------------------

def test_an_operator_the_reader_does_not_support_is_one_line(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
         helper.make_node("Hardmax", ["y"], ["z"], name="the odd one", axis=1)],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")])
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "odd.onnx")
    with pytest.raises(VerifyError) as caught:
        verify(path, RESNET)
    message = str(caught.value)
    assert "Hardmax" in message and "'the odd one'" in message and path in message and "\n" not in message


def test_bad_files_and_sizes_are_one_line_errors(exports, tmp_path):
    with pytest.raises(VerifyError, match="no such file"):
        verify(tmp_path / "missing.onnx", RESNET)
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(VerifyError, match="not (an|a valid) ONNX model"):
        verify(tmp_path / "text.onnx", RESNET)
    with pytest.raises(VerifyError, match=r"does not fit the graph's input \[1, 3, 32, 32\]"):
        verify(save(exports[RESNET], tmp_path / "m.onnx"), RESNET, input_size=(1, 3, 64, 64))
    with pytest.raises(ValueError, match="never changes an ONNX file"):
        verify(tmp_path / "m.onnx", RESNET, port_into_candidate=True)


def test_command_line(exports, tmp_path, capsys):
    good = save(disguised(exports[MOBILENET], seed=9)[0], tmp_path / "good.onnx")
    bad = onnx.ModelProto()
    bad.CopyFrom(exports[MOBILENET])
    hard_sigmoid(bad)
    bad = save(bad, tmp_path / "bad.onnx")
    before = digest(good), digest(bad)
    assert main([good, "--against", MOBILENET, "--format", "text"]) == 0
    assert "EQUIVALENT" in capsys.readouterr().out
    assert main([bad, "--against", MOBILENET]) == 1
    assert "NOT EQUIVALENT" in capsys.readouterr().out
    assert (digest(good), digest(bad)) == before
    with open(good, "rb") as f:
        (tmp_path / "truncated.onnx").write_bytes(f.read()[:5000])
    for args, message in [
        ([str(tmp_path / "missing.onnx")], "no such file"),
        ([str(tmp_path / "truncated.onnx")], "ONNX model"),
        ([good, "--input-size", "64"], "does not fit the graph's input"),
        ([good, "--candidate-kwargs", "{}"], "takes no keyword arguments"),
    ]:
        assert main([*args, "--against", MOBILENET]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and message in captured.err and captured.err.count("\n") == 1, captured.err


# -- the reader against ONNX Runtime, operator by operator ------------------------------------------------

def graph_of(nodes, initializers, opset: int) -> onnx.ModelProto:
    """A model of ``nodes`` from the input ``x`` [2, 3, 5, 5] to the last node's first output (its type
    from ONNX's shape inference)."""
    output = nodes[-1].output[0]
    graph = helper.make_graph(nodes, "ops", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 5, 5])],
                              [helper.make_empty_tensor_value_info(output)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    model.graph.output[0].CopyFrom(next(v for v in inferred.graph.value_info if v.name == output))
    return model


def ints(*values):
    return np.asarray(values, dtype=np.int64)


RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
OPS = {
    "conv SAME_UPPER stride 2": ([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
                                 [("w", W)], 17),
    "conv SAME_LOWER stride 2": ([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2])],
                                 [("w", W)], 17),
    "conv dilated": ([helper.make_node("Conv", ["x", "w"], ["y"], pads=[2, 1, 2, 1], dilations=[2, 1])], [("w", W)],
                     17),
    "conv asymmetric pads, groups": ([helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 1], group=3)],
                                     [("w", RNG.standard_normal((6, 1, 3, 3)).astype(np.float32))], 17),
    "conv transpose": ([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                                         output_padding=[1, 1])], [("w", W.transpose(1, 0, 2, 3).copy())], 17),
    "max pool asymmetric, dilated": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 2], pads=[0, 1, 2, 0],
                                                       dilations=[1, 2], strides=[2, 1])], [], 17),
    "max pool ceil": ([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
                      [], 17),
    "average pool ceil, pads excluded": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                                           strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)], [], 17),
    "average pool asymmetric, pads excluded": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 3],
                                                                 pads=[1, 0, 0, 2])], [], 17),
    "average pool asymmetric, pads included": ([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 3],
                                                                 pads=[1, 0, 0, 2], count_include_pad=1)], [], 17),
    "pad reflect on two axes": ([helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")],
                                [("p", ints(0, 0, 1, 2, 0, 0, 2, 0))], 17),
    "pad edge, axes input": ([helper.make_node("Pad", ["x", "p", "", "a"], ["y"], mode="edge")],
                             [("p", ints(1, 2, 0, 3)), ("a", ints(-1, 2))], 18),
    "pad constant, negative": ([helper.make_node("Pad", ["x", "p", "v"], ["y"])],
                               [("p", ints(0, 1, -1, 0, 0, 0, 2, -2)), ("v", np.float32(0.5))], 17),
    "slice negative step": ([helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])],
                            [("s", ints(-1, 1)), ("e", ints(-(2 ** 63) + 1, 100)), ("a", ints(3, 1)),
                             ("t", ints(-2, 1))], 17),
    "reshape 0 and -1, flatten": ([helper.make_node("Reshape", ["x", "s"], ["r"]),
                                   helper.make_node("Flatten", ["r"], ["y"], axis=-1)], [("s", ints(0, -1, 5))], 17),
    "gemm transA, alpha, beta": ([helper.make_node("Flatten", ["x"], ["f"]),
                                  helper.make_node("Transpose", ["f"], ["t"]),
                                  helper.make_node("Gemm", ["t", "b", "c"], ["y"], transA=1, alpha=0.5, beta=2.0)],
                                 [("b", RNG.standard_normal((75, 4)).astype(np.float32)),
                                  ("c", RNG.standard_normal((1, 4)).astype(np.float32))], 17),
    "matmul by a weight, then its bias": ([helper.make_node("MatMul", ["x", "m"], ["h"]),
                                           helper.make_node("Add", ["b", "h"], ["y"])],
                                          [("m", RNG.standard_normal((5, 7)).astype(np.float32)),
                                           ("b", RNG.standard_normal(7).astype(np.float32))], 17),
    "softmax before opset 13": ([helper.make_node("Softmax", ["x"], ["y"], axis=2)], [], 11),
    "log softmax": ([helper.make_node("LogSoftmax", ["x"], ["y"], axis=2)], [], 13),
    "split by attribute, squeeze, unsqueeze": ([
        helper.make_node("Split", ["x"], ["a", "b"], axis=2, split=[2, 3]),
        helper.make_node("Unsqueeze", ["b"], ["u"], axes=[0]),
        helper.make_node("Squeeze", ["u"], ["y"], axes=[0])], [], 11),
    "split into equal parts, reduce by input": ([
        helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3),
        helper.make_node("ReduceMean", ["c", "r"], ["y"], keepdims=0)], [("r", ints(-1))], 18),
    "clip by attributes, hard sigmoid": ([helper.make_node("Clip", ["x"], ["c"], min=-0.5, max=0.7),
                                          helper.make_node("HardSigmoid", ["c"], ["y"], alpha=0.3, beta=0.4)],
                                         [], 6),
    "prelu per channel, layer norm": ([helper.make_node("PRelu", ["x", "s"], ["p"]),
                                       helper.make_node("LayerNormalization", ["p", "g", "h"], ["y"], axis=-2,
                                                        epsilon=1e-3)],
                                      [("s", RNG.standard_normal((3, 1, 1)).astype(np.float32)),
                                       ("g", RNG.standard_normal((5, 5)).astype(np.float32)),
                                       ("h", RNG.standard_normal((5, 5)).astype(np.float32))], 17),
    "gather negative, expand, concat": ([helper.make_node("Gather", ["x", "i"], ["g"], axis=3),
                                         helper.make_node("Expand", ["g", "e"], ["x2"]),
                                         helper.make_node("Concat", ["x2", "x2"], ["y"], axis=0)],
                                        [("i", ints(-1, 0)), ("e", ints(2, 1, 1, 1))], 17),
    "instance norm, global pools": ([helper.make_node("InstanceNormalization", ["x", "g", "h"], ["n"], epsilon=1e-2),
                                     helper.make_node("GlobalMaxPool", ["n"], ["m"]),
                                     helper.make_node("GlobalAveragePool", ["n"], ["a"]),
                                     helper.make_node("Sub", ["m", "a"], ["y"])],
                                    [("g", RNG.standard_normal(3).astype(np.float32)),
                                     ("h", RNG.standard_normal(3).astype(np.float32))], 17),
}


@pytest.mark.parametrize("case", list(OPS))
def test_the_reader_computes_what_onnx_runtime_computes(case):
    """Each operator's attributes and inputs read as the ONNX specification says, ONNX Runtime the judge."""
    nodes, initializers, opset = OPS[case]
    for k, n in enumerate(nodes):
        n.name = f"n{k}"
    proto = graph_of(nodes, initializers, opset)
    onnx.checker.check_model(proto)
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    expected = run_session(session(proto.SerializeToString()), x)
    graph = load(proto)
    with torch.no_grad():
        got = graph(x)
        got64 = graph.double()(x.double())
    assert got.shape == expected.shape
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= 1e-5 * scale, case
    assert float((got64 - expected.double()).abs().max()) <= 1e-5 * scale, case
    # Written back, the weights the reader holds are the graph's: ONNX Runtime computes the same.
    again = run_session(session(with_weights(proto, graph.float()).SerializeToString()), x)
    assert torch.equal(again, expected), case


def test_merged_initializers_become_one_weight_per_node_and_are_written_back_apart(tmp_path):
    """The TorchScript exporter merges equal initializers (an untrained model's BatchNorms share their ones
    and zeros) and routes them through Identity nodes: each node gets its own copy."""
    path = tmp_path / "untrained.onnx"
    export_unfolded(repro.create_model("resnet18").eval(), path)
    proto = onnx.load(str(path))
    passed = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Identity"}
    readers = {}
    for n in proto.graph.node:
        if n.op_type == "BatchNormalization":
            readers.setdefault(passed.get(n.input[1], n.input[1]), []).append(n.name)
    assert max(len(v) for v in readers.values()) > 1  # shared in the file
    graph = load(proto)
    norms = [m for m in graph.children() if m.op_type == "BatchNormalization"]
    assert len({id(m.weight) for m in norms}) == len(norms)
    with torch.no_grad():
        norms[0].weight.mul_(3.0)  # one BatchNorm changed: only its node reads the change
    x = torch.randn(1, 3, SIZE, SIZE)
    written = with_weights(proto, graph)
    assert len(written.graph.initializer) > len(proto.graph.initializer)
    with torch.no_grad():
        assert torch.allclose(run_session(session(written.SerializeToString()), x), graph(x), rtol=1e-4, atol=1e-4)


def test_a_weight_whose_shape_alone_is_read_is_no_weight_of_the_reader():
    """torch's dynamo exporter (optimize=False) writes a bias-free convolution's bias as ``Expand(0, Shape(W))``:
    ``W`` is the convolution's weight; the ``Shape`` node reads only its shape and holds no copy of it."""
    nodes = [helper.make_node("Shape", ["w"], ["shape"], start=0, end=1),
             helper.make_node("ConstantOfShape", ["shape"], ["b"], value=numpy_helper.from_array(
                 np.zeros(1, np.float32))),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    graph = load(graph_of(nodes, [("w", W)], 17))
    holders = {type(m).__name__ if not hasattr(m, "op_type") else m.op_type: [n for n, _ in m.named_parameters()]
               for m in graph.children() if list(m.named_parameters())}
    assert holders == {"Conv": ["weight"]}, holders


def test_float_attributes_are_read_as_the_numbers_they_stand_for():
    """ONNX keeps float attributes in float32: 1/6 is 0.16666667163. It is read back as 1/6 (so that a
    float64 comparison does not see float32 rounding as a difference), never farther than that rounding."""
    assert intended(float(np.float32(1 / 6))) == 1 / 6
    assert intended(float(np.float32(1e-5))) == 1e-5
    assert intended(6.0) == 6.0 and intended(-0.5) == -0.5 and intended(0.0) == 0.0
    for value in (np.pi, 0.044715, 1.702, 3e-20, -7.5e12):
        single = np.float32(value)
        assert np.float32(intended(float(single))) == single
