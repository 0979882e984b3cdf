"""``python -m repro.verify MODEL --against SPEC``: is MODEL exactly the reference, and if not, where does it differ?

MODEL is ``path/to/file.py:ATTR`` or ``package.module:ATTR``, ATTR a class or a zero-argument
factory returning an ``nn.Module``, or an ONNX file (``model.onnx``: a model from any framework,
exported; its input size is the graph's unless ``--input-size`` is given). SPEC is a reference such
as ``timm:resnet50`` (or another ``file.py:ATTR``). Exit status: 0 equivalent; 1 not equivalent (the
report says where) or structures that do not pair one to one (what does not pair); 3 undecided (nothing
differs, but the train step cannot be decided here: the report says why and what would decide it); 2 bad
input (unreadable file, missing attribute, unknown spec, a model that does not run, an ONNX file that is not
valid or uses an operator the reader does not support), with a
one-line error and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

from torch import nn

from repro.equivalence import FLOAT64_RTOL
from repro.registry import KNOWN_SOURCES, UnknownNameError
from repro.verify import PairingError, VerifyError, is_onnx, verify


class CliError(Exception):
    """Bad input: printed as one line, exit status 2."""


# What importing a user's file or calling its factory raises when the file or the call is wrong
# (a missing import, a constructor that needs arguments): bad input, not a verdict.
# Running the user's file, module or factory is a boundary: whatever it raises (a KeyError at import, a
# ZeroDivisionError in a factory, an exception class of its own) is the user's code failing, said in one line with
# its type; nothing of this tool runs inside it. SystemExit and KeyboardInterrupt are not caught.
_USER_CODE_ERRORS = (Exception,)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise CliError(message)


def _input_size(values: list[str]) -> tuple[int, ...]:
    """``2 3 224 224``, ``2x3x224x224`` (as the atlas writes it), ``2,3,224,224``, or ``224`` for 2x3x224x224."""
    written = " ".join(values).lower()
    if "x" in written and len(re.split(r"x", written)) in (2, 3):  # 224x224, 3x224x224: no batch
        raise CliError(f"--input-size takes the batch first where written with x, such as 2x3x224x224, got "
                       f"{written!r}")
    try:
        sizes = [int(v) for v in re.split(r"[x,\s]+", written.strip(" ,"))]
    except ValueError as err:
        raise CliError(f"--input-size takes integers such as '2 3 224 224' or '224', got {' '.join(values)!r}") from err
    if len(sizes) == 1:
        sizes = [2, 3, sizes[0], sizes[0]]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise CliError(f"--input-size takes positive sizes such as '2 3 224 224' or '224', got {' '.join(values)!r}")
    return tuple(sizes)


def _load_attribute(target: str) -> Any:
    if ":" not in target:
        raise CliError(f"expected path/to/file.py:ATTR or package.module:ATTR, got {target!r}")
    location, attr = target.rsplit(":", 1)
    if not attr:
        raise CliError(f"no attribute named after ':' in {target!r}")
    if location.endswith(".py") or "/" in location or "\\" in location:
        path = Path(location)
        if not path.is_file():
            raise CliError(f"cannot read {location}: no such file")
        spec = importlib.util.spec_from_file_location(f"_repro_verify_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise CliError(f"cannot import {location}")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.resolve().parent))  # the file's own sibling imports
        try:
            spec.loader.exec_module(module)
        except _USER_CODE_ERRORS as err:
            raise CliError(f"cannot import {location}: {type(err).__name__}: {err}") from err
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        try:
            module = importlib.import_module(location)
        except _USER_CODE_ERRORS as err:  # not found, or its code fails (a SyntaxError, a KeyError at import)
            raise CliError(f"cannot import module {location!r}: {type(err).__name__}: {err}") from err
    try:
        obj = getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise CliError(f"{location} has no attribute {attr!r} (it has: {', '.join(public[:15])}"
                       f"{', ...' if len(public) > 15 else ''})") from None
    return obj


_EXAMPLE = """'{"drop_rate": 0}'"""


def _kwargs(option: str, text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"{option} takes a JSON object such as {_EXAMPLE}, got {text!r}: {err}") from err
    if not isinstance(value, dict):
        raise CliError(f"{option} takes a JSON object such as {_EXAMPLE}, got {type(value).__name__} {text!r}")
    return value


def _build(target: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    obj = _load_attribute(target)
    if isinstance(obj, nn.Module):
        if kwargs:
            raise CliError(f"{target} is a module instance: it takes no keyword arguments (got {', '.join(kwargs)})")
        return obj
    if not callable(obj):
        raise CliError(f"{target} is a {type(obj).__name__}, not a module class or factory")
    kwargs = kwargs or {}
    try:
        model = obj(**kwargs)
    except _USER_CODE_ERRORS as err:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise CliError(f"{target}({args}) failed: {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise CliError(f"{target}() returned an object of type {type(model).__name__}, not an nn.Module")
    return model


def _reference(spec: str, kwargs: dict[str, Any]) -> str | nn.Module:
    if spec.split(":", 1)[0] in KNOWN_SOURCES:
        return spec
    try:
        return _build(spec, kwargs)
    except CliError as err:
        raise CliError(f"{err} (a reference is {' or '.join(f'{s}:<name>' for s in KNOWN_SOURCES)}, "
                       f"path/to/file.py:ATTR or package.module:ATTR)") from err


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m repro.verify", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="path/to/file.py:ATTR or package.module:ATTR (a class or zero-argument "
                                      "factory), or an ONNX file (model.onnx)")
    parser.add_argument("--against", required=True, metavar="SPEC",
                        help="reference, e.g. timm:resnet50 or torchvision:resnet50")
    parser.add_argument("--input-size", nargs="+", default=None, metavar="N",
                        help="input size, e.g. '2 3 224 224' or '2x3x224x224' (the default; an ONNX file's: its "
                             "graph's) or '224' for 2x3x224x224")
    parser.add_argument("--format", choices=("markdown", "json", "text"), default="markdown")
    parser.add_argument("--rtol", type=float, default=None,
                        help=f"relative tolerance (default: float64 copies, within {FLOAT64_RTOL:g})")
    parser.add_argument("--reference-kwargs", metavar="JSON",
                        help="keyword arguments building the reference, e.g. '{\"drop_rate\": 0}'")
    parser.add_argument("--candidate-kwargs", metavar="JSON", help="keyword arguments for MODEL's class or factory")
    parser.add_argument("--output", metavar="FIELD",
                        help="the compared output of a model returning a tuple, dict or output object: a key, "
                             "attribute or index (default: logits, else the first tensor)")
    parser.add_argument("--no-port", action="store_true", help="compare the weights the models hold instead of porting")
    parser.add_argument("--no-train", action="store_true", help="skip the train-mode step")
    parser.add_argument("--seed", type=int, default=0)
    try:
        args = parser.parse_args(argv)
        input_size = _input_size(args.input_size) if args.input_size is not None else None
        reference_kwargs = _kwargs("--reference-kwargs", args.reference_kwargs)
        if is_onnx(args.model):
            if args.candidate_kwargs is not None:
                raise CliError(f"{args.model} is an ONNX file: it takes no keyword arguments (--candidate-kwargs)")
            candidate = args.model
        else:
            candidate = _build(args.model, _kwargs("--candidate-kwargs", args.candidate_kwargs))
        reference = _reference(args.against, reference_kwargs)
        output = int(args.output) if args.output is not None and args.output.lstrip("-").isdigit() else args.output
        spec_kwargs = reference_kwargs if isinstance(reference, str) and args.reference_kwargs is not None else None
        report = verify(candidate, reference, input_size=input_size, port=not args.no_port, train=not args.no_train,
                        rtol=args.rtol, seed=args.seed, reference_kwargs=spec_kwargs, output=output)
    except (CliError, UnknownNameError, VerifyError, PairingError) as err:
        # A PairingError lists the modules it could not tell apart, one per line.
        print(f"error: {err}", file=sys.stderr)
        return 2
    report.candidate = args.model
    if not isinstance(reference, str):
        report.reference = args.against
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    elif args.format == "markdown":
        print(report.to_markdown())
    else:
        print(report)
    return 0 if report.equivalent else 3 if report.undecided else 1


if __name__ == "__main__":
    sys.exit(main())
