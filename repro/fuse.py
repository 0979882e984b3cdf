"""Inference fusion: fold each BatchNorm into the convolution that feeds it.

In eval mode ``bn(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta`` is itself a
convolution with weight ``W * gamma / sqrt(var + eps)`` and a bias, so the BatchNorm costs
nothing once folded. The pairs are found in the model's ``torch.fx`` graph: a BatchNorm whose
only input is a convolution whose output nothing else reads. The result agrees with the unfused
model to float rounding, is eval-only, and the original is untouched. ``fold_in_place`` folds
pairs the caller names instead, keeping the module tree (``repro.verify`` folds a reference the
way an ONNX exporter folded the candidate).

How close is "to float rounding"? In float64 the fused and unfused models agree to ~1e-13
(the algebra is exact). In float32 they differ by the model's own float32 noise: at default
initialization by < 1e-6 relative; with randomized statistics deep nets amplify rounding (the
unfused ResNet-152 is itself ~1e-4 from its float64 result), and the fused model stays as close
to the float64 result as the unfused one. The tests check all three.

By default the fused copy also stores its weights in channels-last (NHWC) order and converts its
input to it. That is the same arithmetic in another memory layout, and on CPU it is most of the
speed: oneDNN's NHWC kernels are faster, above all for depthwise convolutions (EfficientNet,
MobileNet). timm's and torchvision's models gain from NHWC too when converted; the latency page
times them that way as well, so the comparison stays honest.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.fx as fx
from torch import nn


class FuseError(ValueError):
    """The model cannot be fused (not traceable by torch.fx, or nothing to fold)."""


def _fold(conv: nn.modules.conv._ConvNd, bn: nn.modules.batchnorm._BatchNorm) -> nn.modules.conv._ConvNd:
    fused = copy.deepcopy(conv)
    dtype = conv.weight.dtype
    # Folded in float64, rounded once: the fused weights are the correctly rounded products.
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused.weight = nn.Parameter((conv.weight.double() * scale.reshape(-1, *[1] * (conv.weight.ndim - 1))).to(dtype))
    fused.bias = nn.Parameter(((bias - bn.running_mean.double()) * scale + bn.bias.double()).to(dtype))
    return fused


def foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """Whether ``_fold`` applies: a (not transposed) convolution, and a BatchNorm with affine running statistics."""
    return (isinstance(conv, nn.modules.conv._ConvNd) and not conv.transposed
            and isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.affine and bn.track_running_stats
            and bn.running_mean is not None)


@torch.no_grad()
def fold_in_place(model: nn.Module, pairs: Iterable[tuple[str, str]]) -> None:
    """Fold each named (convolution, BatchNorm) pair of ``model`` in place (call it on a copy, in eval
    mode), keeping the module tree: the convolution is replaced by its folded copy, and the BatchNorm
    module stays where it is (it may apply an activation too, as timm's ``BatchNormAct2d`` does) but
    normalizes by nothing: no weight or bias, zero mean, unit variance, ``eps`` 0, its statistics
    non-persistent buffers, so that it holds no state of its own. For models ``fuse`` cannot fold
    (not traceable by torch.fx, or a BatchNorm that is not a leaf module); the caller says which
    pairs are a convolution feeding only its BatchNorm (``foldable`` says whether ``_fold`` applies)."""
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if not foldable(conv, bn):
            raise FuseError(f"cannot fold {bn_name} ({type(bn).__name__}) into {conv_name} ({type(conv).__name__})")
        _set_submodule(model, conv_name, _fold(conv, bn))
        bn.register_parameter("weight", None)
        bn.register_parameter("bias", None)
        mean = bn.running_mean
        bn.register_buffer("running_mean", torch.zeros_like(mean), persistent=False)
        bn.register_buffer("running_var", torch.ones_like(mean), persistent=False)
        if bn.num_batches_tracked is not None:
            bn.register_buffer("num_batches_tracked", bn.num_batches_tracked.clone(), persistent=False)
        bn.eps = 0.0


class _ConvLeafTracer(fx.Tracer):
    """Every convolution is one graph node, subclasses too (e.g. a TF-"same" padding conv that
    computes its padding from the input's shape, which symbolic tracing could not follow)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _convert_inputs_to_channels_last(graph: fx.Graph) -> None:
    """Make every image input NHWC on entry: ``x.contiguous(memory_format=torch.channels_last)``."""
    for placeholder in [n for n in graph.nodes if n.op == "placeholder"]:
        with graph.inserting_after(placeholder):
            converted = graph.call_method("contiguous", (placeholder,), {"memory_format": torch.channels_last})
        placeholder.replace_all_uses_with(converted, delete_user_cb=lambda user: user is not converted)


@torch.no_grad()
def fuse(
    model: nn.Module,
    *,
    channels_last: bool = True,
    freeze: bool = False,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """An eval-only copy of ``model`` with every conv -> BatchNorm pair folded into one conv.

    ``channels_last=True`` (the default) stores the weights in NHWC order and makes the copy
    convert its input to NHWC first, so callers pass ordinary NCHW tensors; ``False`` keeps the
    model's layout. ``freeze=True`` goes one step further for CPU inference: the folded model is
    traced on ``example_input`` and frozen by TorchScript (``torch.jit.freeze`` +
    ``optimize_for_inference``), which prepacks convolution weights for oneDNN and fuses conv +
    add + ReLU; the result is a ``ScriptModule`` for inputs of that shape, as close to the unfused
    model as the folding alone. (TorchScript is deprecated in recent torch: 2.11 and 2.14 warn;
    ``torch.compile(fuse(model))`` is its successor and is benchmarked as ``ours+fused+compile``.)
    Raises ``FuseError`` if the model cannot be traced or contains no foldable pair.
    """
    model = copy.deepcopy(model).eval()
    try:
        graph_module = fx.GraphModule(model, _ConvLeafTracer().trace(model))
    except (fx.proxy.TraceError, TypeError, RuntimeError) as err:
        raise FuseError(f"{type(model).__name__} cannot be traced by torch.fx: {err}") from err
    modules = dict(graph_module.named_modules())
    folded = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and isinstance(modules[source.target], nn.Conv2d)):
            continue
        bn = modules[node.target]
        if not bn.track_running_stats:
            continue
        _set_submodule(graph_module, source.target, _fold(modules[source.target], bn))
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        folded += 1
    if folded == 0:
        raise FuseError(f"{type(model).__name__} has no convolution -> BatchNorm pair to fold")
    graph_module.graph.eliminate_dead_code()
    graph_module.delete_all_unused_submodules()
    if channels_last:
        _convert_inputs_to_channels_last(graph_module.graph)
        graph_module = graph_module.to(memory_format=torch.channels_last)
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.folded_batchnorms = folded
    if not freeze:
        return graph_module.eval()
    if example_input is None:
        raise FuseError("freeze=True needs example_input= (a tensor of the shape the frozen model will see)")
    if not hasattr(torch.jit, "optimize_for_inference"):  # feature detection, not a version check
        raise FuseError(f"this torch ({torch.__version__}) has no torch.jit.optimize_for_inference: use freeze=False")
    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(graph_module.eval(), example_input)))
    frozen.folded_batchnorms = folded
    return frozen
