"""weights=PATH: safetensors and torch files, read safely, loaded all-or-nothing, errors naming the file."""

import os
import pickle
import random

import pytest
import torch
from safetensors.torch import save_file

import reference
import repro
from repro.equivalence import randomize_
from repro.weights import WeightsError, load_weights_file

from helpers import assert_state_unchanged, state_snapshot

SPEC = "torchvision:resnet18"


@pytest.fixture(scope="module")
def trained_state():
    model = randomize_(reference.create(SPEC), (2, 3, 64, 64), seed=3)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def x():
    return torch.randn(2, 3, 64, 64)


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_weights_file_roundtrip(tmp_path, trained_state, x, kind):
    path = tmp_path / ("w.safetensors" if kind == "safetensors" else "w.pth")
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in trained_state.items()}, str(path))
    else:
        torch.save(trained_state, path)
    ref = reference.create(SPEC, weights=path)
    assert all(torch.equal(ref.state_dict()[k], v) for k, v in trained_state.items())
    ours = repro.from_reference(SPEC, weights=str(path))
    assert torch.equal(_outputs(ours, x), _outputs(ref, x))


def test_missing_file():
    with pytest.raises(WeightsError, match=r"'/nonexistent/w\.pth' does not exist"):
        reference.create(SPEC, weights="/nonexistent/w.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file(tmp_path, trained_state, suffix):
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(trained_state, path)
    else:
        save_file({k: v.contiguous() for k, v in trained_state.items()}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    model = reference.create(SPEC)
    before = state_snapshot(model)
    with pytest.raises(WeightsError, match=str(path)):
        load_weights_file(model, path)
    assert_state_unchanged(model, before)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("header", [b"", b"PK\x03\x04", b"\x80\x02"])
def test_garbage_file(tmp_path, header, seed):
    path = tmp_path / "w.pth"
    path.write_bytes(header + random.Random(seed).randbytes(4096))
    with pytest.raises(WeightsError, match="w.pth"):
        reference.create(SPEC, weights=path)


def test_other_architecture_is_refused_and_model_untouched(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(reference.create("torchvision:resnet34").state_dict(), path)
    model = reference.create(SPEC)
    before = state_snapshot(model)
    with pytest.raises(WeightsError, match=r"resnet34\.pth: does not fit .*unexpected.*another architecture"):
        load_weights_file(model, path)
    assert_state_unchanged(model, before)


def test_wrong_shapes_are_refused(tmp_path, trained_state):
    state = dict(trained_state)
    state["fc.weight"] = torch.zeros(10, 512)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"fc\.weight: file \(10, 512\) vs model \(1000, 512\)"):
        reference.create(SPEC, weights=path)


def test_non_tensor_entries(tmp_path, trained_state):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": trained_state, "epoch": 3}, path)
    message = r"ckpt\.pth: 2 entries are not tensors: 'state_dict' \(dict\), 'epoch' \(int\)"
    with pytest.raises(WeightsError, match=message):
        reference.create(SPEC, weights=path)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"fc.weight": payload}, f)
    with pytest.raises(WeightsError, match=r"evil\.pth: refused to load") as refused:
        reference.create(SPEC, weights=path)
    assert not marker.exists()
    # The refusal names what was refused, and does not repeat torch's advice to load the file anyway.
    message = str(refused.value)
    assert "Unsupported" in message and "weights_only" not in message and "\x1b" not in message
    assert len(message.splitlines()) == 1


def test_pretrained_offline_points_to_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached torchvision checkpoint
    with pytest.raises(reference.PretrainedUnavailableError, match="weights=PATH"):
        reference.create(SPEC, pretrained=True)
    with pytest.raises(reference.PretrainedUnavailableError, match="weights=PATH"):
        reference.create("timm:resnet18", pretrained=True)  # HF_HUB_OFFLINE=1 (conftest)


def test_pretrained_and_weights_together_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        reference.create(SPEC, pretrained=True, weights=tmp_path / "w.pth")


@pytest.mark.parametrize("convert, words", [
    (lambda t: t.to(torch.bool) if t.is_floating_point() else t, "another kind of number"),
    (lambda t: t.to(torch.int64) if t.is_floating_point() else t, "another kind of number"),
    (lambda t: t.to(torch.complex64) if t.is_floating_point() else t, "another kind of number"),
    (lambda t: t.to_sparse() if t.ndim == 2 else t, "no dense values"),
])
def test_tensors_of_another_kind_of_number_are_refused_not_cast(tmp_path, trained_state, convert, words):
    """Loading would cast them silently (every weight 0 or 1, an integer, a lost imaginary part): refused, one line,
    the model unchanged. Another float precision is the same kind of number and loads."""
    path = tmp_path / "w.pth"
    torch.save({k: convert(v) for k, v in trained_state.items()}, path)
    model = reference.create(SPEC)
    before = state_snapshot(model)
    with pytest.raises(WeightsError, match=words) as caught:
        load_weights_file(model, path)
    assert "\n" not in str(caught.value)
    assert_state_unchanged(model, before)
    torch.save({k: v.double() if v.is_floating_point() else v for k, v in trained_state.items()}, path)
    load_weights_file(model, path)


def test_a_refusal_without_torchs_marked_reason_still_leaves_out_its_advice():
    from reference.weights import _refusal_reason

    advice = ("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely "
              "succeed, but it can result in arbitrary code execution. Do it only if you got the file from a trusted "
              "source.")
    assert _refusal_reason(pickle.UnpicklingError(f"{advice}\nunexpected opcode")) == "unexpected opcode"
    assert _refusal_reason(pickle.UnpicklingError(advice)) == "unpickling refused"
    marked = f"{advice}\nWeightsUnpickler error: \n\nUnsupported operand 149\n\nCheck the documentation"
    assert _refusal_reason(pickle.UnpicklingError(marked)) == "Unsupported operand 149"
