"""``repro.verify``: is this model exactly the timm / torchvision one, and if not, where does it go wrong?

``verify(candidate, "timm:resnet50")`` takes any ``nn.Module``, written however its author
liked, and, on copies of both models (what the user hands in is never changed):

1. builds the reference and randomizes every parameter and buffer (``repro.equivalence.randomize_``:
   BatchNorm statistics calibrated then perturbed, no zero gammas), so that nothing agrees by
   accident; lets frozen parameters take gradients (naming them); finds every stochastic layer
   of both (dropout, drop-path: ``_stochastic``) and turns it off, keeping the rates to compare;
2. runs both models and pairs their parametrized modules by the network's dataflow (which
   module consumes which module's output), never by names, definition order or the order
   independent branches run in; a Linear pairs with a 1x1 convolution. Where the dataflow does
   not decide, each way of pairing the tied modules is tried (at most 24) and the one under which
   every module agrees kept; else it refuses (``PairingError``, listing the candidates); where the structures
   differ, the report names every unpaired tensor of both models and where the structures part;
3. copies the reference's weights into the candidate's copy through that pairing (all or nothing;
   architecture constants such as index tables are compared, not copied);
4. on float64 copies (``repro.equivalence``'s one definition of equivalence; float32 with a
   calibrated tolerance where a model cannot run in float64), compares every paired module (its
   input and its own result) and the outputs in eval mode, and in eval mode on one sample scaled up
   by 8 (so that saturating activations such as ReLU6 and hard-sigmoid leave their linear range);
   compares one train-mode step by what it leaves (outputs, the input gradient, every parameter
   gradient, the running statistics BatchNorm leaves behind), module by module only to locate a
   difference (with the gradient at every point, so a wrong backward is named where backward goes
   wrong); then the same passes in float32, for bit-identity;
5. gives the verdict in levels (eval, train step, stochastic configuration), each naming its
   first divergence: the innermost candidate module whose output differs while its inputs agree
   (a block whose children all agree but whose output does not is named itself).

The candidate may also be an ONNX file (``verify("model.onnx", "timm:resnet50")``) or an
``onnx.ModelProto``: a model written in any framework and exported, read node by node into torch
(``repro.onnx_graph``) and verified the same way, its first divergence named by its ONNX node
(``_onnx``: folded BatchNorms, the ONNX Runtime level, and what does not apply to an inference graph).

``python -m repro.verify file.py:Model --against timm:resnet50`` (or ``model.onnx --against ...``)
does the same from a shell; ``repro.testing.assert_equivalent`` inside a test suite.
"""

import os
import sys
from typing import Any, Mapping, Sequence

from torch import nn

from repro.verify._pairing import PairingError
from repro.verify._report import VerifyReport
from repro.verify._run import WIDE_INPUT_SCALE, VerifyError, VerifyOptions, verify_module

__all__ = ["PairingError", "VerifyError", "VerifyReport", "verify"]


def is_onnx(candidate: Any) -> bool:
    """An ONNX file's path (``.onnx``) or an ``onnx.ModelProto`` (a user holding one has imported onnx)."""
    if isinstance(candidate, (str, os.PathLike)):
        return os.fspath(candidate).lower().endswith(".onnx")
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(candidate, onnx.ModelProto)


def verify(
    candidate: Any,
    reference: str | nn.Module,
    *,
    input_size: Sequence[int] | None = None,
    port: bool = True,
    train: bool = True,
    rtol: float | None = None,
    seed: int = 0,
    wide_input_scale: float | None = WIDE_INPUT_SCALE,
    reference_kwargs: Mapping[str, Any] | None = None,
    output: str | int | None = None,
    port_into_candidate: bool = False,
) -> VerifyReport:
    """Whether ``candidate`` computes exactly what ``reference`` computes, and where it first differs.

    ``candidate`` is an ``nn.Module`` (``repro.verify._run.verify_module`` says how it is decided) or
    an ONNX file / ``onnx.ModelProto`` (``repro.verify._onnx.verify_onnx``: needs the onnx extra).
    """
    options = VerifyOptions(input_size=input_size, port=port, train=train, rtol=rtol, seed=seed,
                            wide_input_scale=wide_input_scale, reference_kwargs=reference_kwargs, output=output,
                            port_into_candidate=port_into_candidate)
    if is_onnx(candidate):
        try:
            from repro.verify._onnx import verify_onnx  # onnx is an optional dependency (the onnx extra)
        except ImportError as err:
            raise VerifyError(f"verifying an ONNX file needs the onnx extra (pip install 'cnn-repro[onnx]'): "
                              f"{err}") from None
        return verify_onnx(candidate, reference, options)
    return verify_module(candidate, reference, options)

