"""Reading weight files safely and loading them all-or-nothing.

Torch files are read with ``weights_only=True``: a checkpoint can hold tensors, never code.
Every error names the file and what is wrong with it.
"""

from __future__ import annotations

import pickle
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

SAFETENSORS_SUFFIXES = (".safetensors",)


class WeightsError(ValueError):
    """A weights file that is missing, unreadable, or does not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` state dict from a ``.safetensors`` or torch file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist" if not path.exists()
                           else f"weights path {str(path)!r} is not a file")
    if path.suffix in SAFETENSORS_SUFFIXES:
        state = _read_safetensors(path)
    else:
        state = _read_torch(path)
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    bad = {str(k): type(v).__name__ for k, v in state.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)}
    if bad:
        shown = ", ".join(f"{k!r} ({t})" for k, t in list(bad.items())[:5])
        raise WeightsError(
            f"{path}: {len(bad)} entries are not tensors: {shown}"
            + (" ..." if len(bad) > 5 else "")
            + ". Save the model's state_dict() itself, not a training checkpoint around it."
        )
    if not state:
        raise WeightsError(f"{path}: holds no tensors")
    return dict(state)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err})") from err


# What torch.load's unpickler raises on damaged bytes, beyond its own UnpicklingError.
_CORRUPTION_ERRORS = (
    RuntimeError, EOFError, zipfile.BadZipFile, OSError, IndexError, KeyError, ValueError, struct.error,
)


def _refusal_reason(err: pickle.UnpicklingError) -> str:
    """What the unpickler refused, in one sentence: torch's message opens with advice on loading the file anyway
    (weights_only=False: running the file's code), which a refusal should not repeat."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    found = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)  # the reason may start on a later line
    if found:
        return re.split(r"(?<=\.)\s", found.group(1).strip(), maxsplit=1)[0]  # its first sentence
    # No reason marked: the first line that is not torch's advice on loading it anyway (weights_only=False).
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and "weights_only" not in line and "trusted source" not in line]
    return lines[0] if lines else "unpickling refused"


def _read_torch(path: Path) -> object:
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise WeightsError(f"{path}: not a torch file (neither a zip archive nor a pickle) and not .safetensors")
    try:
        with warnings.catch_warnings():
            # A checkpoint pickled with a newer protocol loads (or is refused) all the same: the warning is noise.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only=True refuses any pickle that would import or call code.
        raise WeightsError(
            f"{path}: refused to load: the file is not a plain tensor checkpoint "
            f"(it would run code or is corrupt): {_refusal_reason(err)}"
        ) from err
    except _CORRUPTION_ERRORS as err:
        raise WeightsError(f"{path}: truncated or corrupt torch file ({type(err).__name__}: {err})") from err


def number_kind(tensor: torch.Tensor) -> str:
    """The kind of number a tensor holds: "bool", "complex", "floating" or "integer" (a cast between kinds loses
    information; between precisions of one kind it is a change of precision)."""
    if tensor.dtype == torch.bool:
        return "bool"
    if tensor.is_complex():
        return "complex"
    return "floating" if tensor.is_floating_point() else "integer"


def check_state_dict_fits(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Raise ``WeightsError`` unless ``state`` has exactly the model's keys and shapes, each tensor dense and of
    the same kind of number (floating, integer, bool, complex) as the model's."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    # Loading casts silently: a bool or integer file into float weights, a complex one losing its imaginary part.
    # A float of another precision (half, double) is the same kind of number, and loads.
    wrong_kind = [
        f"{k}: file {state[k].dtype} vs model {expected[k].dtype}"
        for k in expected
        if k in state and number_kind(state[k]) != number_kind(expected[k])
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} of the wrong shape (e.g. {'; '.join(wrong_shape[:3])})")
        raise WeightsError(
            f"{origin}: does not fit {type(model).__module__}.{type(model).__qualname__}: "
            + ", ".join(parts)
            + ". Is it a checkpoint of another architecture?"
        )
    no_values = [k for k, t in state.items() if t.is_meta or t.layout != torch.strided]
    if no_values:
        raise WeightsError(f"{origin}: {len(no_values)} tensors hold no dense values (meta or sparse), e.g. "
                           f"{', '.join(no_values[:3])}")
    if wrong_kind:
        raise WeightsError(f"{origin}: {len(wrong_kind)} tensors hold another kind of number than the model's "
                           f"(e.g. {'; '.join(wrong_kind[:3])})")


def load_state_dict_atomic(model: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into ``model`` strictly; on any failure the model is left exactly as it was."""
    check_state_dict_fits(model, state, origin)
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        model.load_state_dict(state, strict=True)
    except BaseException:
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                tensor.copy_(backup[key])
        raise


def load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``.safetensors`` or torch state-dict file into ``model`` (strict, atomic)."""
    load_state_dict_atomic(model, read_state_dict(path), origin=str(path))
    return model
