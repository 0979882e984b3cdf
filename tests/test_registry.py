"""The registry, the public names, and the rule that model code imports torch only."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import reference
import repro
from repro.registry import MODELS, REFERENCES, UnknownNameError

PACKAGE = Path(repro.__file__).parent
MODEL_FILES = sorted((PACKAGE / "models").glob("*.py")) + [PACKAGE / "layers.py"]


def test_foundation_models_and_references_are_registered():
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34"):
        assert name in repro.list_models()
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        assert f"timm:{name}" in repro.list_references()
        assert f"torchvision:{name}" in repro.list_references()
    assert repro.list_references("timm") == sorted(s for s in REFERENCES if s.startswith("timm:"))


def test_every_reference_names_a_registered_model():
    for entry in REFERENCES.values():
        assert entry.model in MODELS


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_code_imports_torch_only(path):
    allowed_roots = {"torch", "repro", "__future__", "typing", "dataclasses", "math", "functools", "collections",
                     "enum", "itertools"}
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
            allowed = node.module in ("repro.layers", "repro.registry") or node.module.startswith("repro.models")
            assert allowed, node.module


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


# The layering, read from the import statements. Bottom to top: ``reference`` (timm and torchvision
# adapters, weight files), ``repro.port_rules`` (rules as data), ``repro.registry`` (the tables),
# ``repro.porting`` (applying rules). A module may import only modules below it.
ROOT = PACKAGE.parent
LAYERED = ["reference", "repro.port_rules", "repro.registry", "repro.porting"]
PROJECT_ROOTS = ("reference", "repro")


def _module_files(name: str) -> list[Path]:
    path = ROOT.joinpath(*name.split("."))
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Every project module ``path`` imports, with whether the import is inside a function."""
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(n, id(node) in local) for n in names if n.split(".")[0] in PROJECT_ROOTS]
    return found


def _layer(module: str) -> int | None:
    for i, name in enumerate(LAYERED):
        if module == name or module.startswith(name + "."):
            return i
    return None


@pytest.mark.parametrize("layer", LAYERED)
def test_layers_import_only_layers_below_them(layer):
    for path in _module_files(layer):
        for imported, _ in _imports(path):
            below = _layer(imported)
            assert below is not None and below <= LAYERED.index(layer), (
                f"{_module_name(path)} (layer {layer}) imports {imported}, which is not below it"
            )
            if layer == "reference":
                assert imported.split(".")[0] == "reference", f"{_module_name(path)} imports {imported}"


# Project modules that need an optional extra at import time, and that extra: imported where they are used, so that
# `import repro` neither needs the extra nor pays for importing it (onnx takes about a second).
OPTIONAL_EXTRA_MODULES = {"repro.verify._onnx": "onnx"}


@pytest.mark.parametrize("package", PROJECT_ROOTS)
def test_no_function_local_imports_of_project_modules(package):
    for path in _module_files(package):
        local = [imported for imported, inside in _imports(path) if inside and imported not in OPTIONAL_EXTRA_MODULES]
        assert not local, f"{_module_name(path)} imports {local} inside a function (a cycle dodged?)"


@pytest.mark.parametrize("module, extra", OPTIONAL_EXTRA_MODULES.items())
def test_a_module_imported_late_does_need_its_optional_extra(module, extra):
    tree = ast.parse(_module_files(module)[0].read_text())
    top = {a.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for a in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert extra in top, f"{module} does not import {extra} itself: import it at the top of its users"


def test_the_layer_test_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom repro.registry import MODELS\n\ndef f():\n    import reference.weights\n")
    assert _imports(bad) == [("repro.registry", False), ("reference.weights", True)]


def test_importing_reference_loads_no_repro_module():
    code = "import sys, reference; print(sorted(m for m in sys.modules if m.split('.')[0] == 'repro'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
