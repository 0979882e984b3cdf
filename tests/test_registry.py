"""The registry, the public names, and the rule that model code imports torch only."""

import ast
from pathlib import Path

import pytest
import torch

import reference
import repro
from repro.registry import MODELS, REFERENCES, UnknownNameError

MODEL_FILES = sorted((Path(repro.__file__).parent / "models").glob("*.py")) + [Path(repro.__file__).parent / "layers.py"]


def test_foundation_models_and_references_are_registered():
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34"):
        assert name in repro.list_models()
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        assert f"timm:{name}" in reference.list_references()
        assert f"torchvision:{name}" in reference.list_references()
    assert reference.list_references("timm") == sorted(s for s in REFERENCES if s.startswith("timm:"))


def test_every_reference_names_a_registered_model():
    for entry in REFERENCES.values():
        assert entry.model in MODELS


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_code_imports_torch_only(path):
    allowed_roots = {"torch", "repro", "__future__", "typing", "dataclasses", "math", "functools", "collections", "enum", "itertools"}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= allowed_roots, f"{path.name} imports {roots - allowed_roots}"
        if "repro" in roots and isinstance(node, ast.ImportFrom):
            assert node.module in ("repro.layers", "repro.registry") or node.module.startswith("repro.models"), node.module


def test_hand_written_models_contain_no_ecosystem_modules():
    for name in repro.list_models():
        model = repro.create_model(name)
        foreign = {type(m).__module__ for m in model.modules()} - {""}
        assert all(mod.startswith(("torch.", "repro.")) for mod in foreign), (name, foreign)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError, match=r"Did you mean: .*resnet50"):
        repro.create_model("resnet5O")


def test_unknown_reference_specs():
    with pytest.raises(UnknownNameError, match="known sources: timm, torchvision"):
        reference.create("keras:resnet50")
    with pytest.raises(UnknownNameError, match="timm:resnet50"):
        reference.create("timm:resnet5O")
    with pytest.raises(UnknownNameError, match="look like"):
        reference.create("resnet50")
    with pytest.raises(UnknownNameError, match="not a reference the suite covers"):
        repro.from_reference("timm:resnet26")


def test_builders_pass_options():
    model = repro.create_model("resnet18", num_classes=7, in_chans=1)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    zero = repro.create_model("resnet50", zero_init_residual=True)
    assert all((b.bn3.weight == 0).all() for layer in (zero.layer1, zero.layer4) for b in layer)


def test_plain_nets_have_no_shortcut():
    plain = repro.create_model("plain34")
    assert not any("downsample" in n for n, _ in plain.named_modules())
    block = plain.layer1[0]
    x = torch.randn(1, 64, 8, 8)
    block.eval()
    with torch.no_grad():
        expected = block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))
        assert torch.equal(block(x), expected)
