"""``repro.verify`` against a zoo of independent implementations, right and wrong.

Every zoo model (``tests/zoo/``) names its modules its own way, defines them in its own order and
computes shortcuts first, so only the dataflow can pair it with the timm model. Each correct one
must verify as equivalent (bit-identical where it uses the same operations); each classic mistake
must be flagged, with the first divergence naming the module where the mistake lives.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import reference
import repro
from helpers import assert_state_unchanged, state_snapshot
from repro.porting import plan_port
from repro.registry import UnknownNameError, create_model_from_entry
from repro.testing import assert_equivalent
from repro.verify import PairingError, VerifyError, VerifyReport, verify
from repro.verify.__main__ import main
from zoo.efficientnet_b0 import SE, EfficientNetB0, MBConv, efficientnet_b0_seed_drop_connect
from zoo.mobilenetv3_large import KerasHardSigmoid, MobileNetV3Large
from zoo.resnet50 import ResNet50, Unit

ROOT = Path(__file__).resolve().parents[1]
SMALL = (2, 3, 64, 64)  # every zoo network still ends at 2x2 before its global pool
RESNET, MOBILENET, EFFICIENTNET = "timm:resnet50", "timm:mobilenetv3_large_100", "timm:efficientnet_b0"


# -- the zoo: correct implementations ----------------------------------------------------------

@pytest.mark.parametrize("build, spec, bit_exact", [
    pytest.param(ResNet50, RESNET, True, id="resnet50"),
    pytest.param(EfficientNetB0, EFFICIENTNET, True, id="efficientnet_b0"),
    pytest.param(lambda: MobileNetV3Large(linear_head=False), MOBILENET, True, id="mobilenetv3_large-conv-head"),
    # nn.Linear where timm has a 1x1 convolution: the same numbers, computed by another kernel.
    pytest.param(MobileNetV3Large, MOBILENET, False, id="mobilenetv3_large-linear-head"),
])
def test_correct_implementations_verify(build, spec, bit_exact):
    candidate = build()
    report = verify(candidate, spec, input_size=SMALL if spec != RESNET else (2, 3, 32, 32))
    assert report.equivalent, str(report)
    assert report.bit_exact is bit_exact, str(report)
    assert report.first_divergence is None
    assert report.structure_matches
    assert report.layers["ok"].all()
    # Nothing was paired by name: every tensor kept the candidate's own.
    assert report.port is not None and len(report.port.renamed) > 0.9 * len(report.port.pairs)
    assert len(report.layers) == sum(1 for m in candidate.modules()
                                     if next(m.parameters(recurse=False), None) is not None)
    if not bit_exact:
        assert [p.transform for p in report.port.transformed] == [
            "reshape [1280, 960, 1, 1] -> [1280, 960] (1x1 conv -> Linear)"]
        assert report.max_abs_diff > 0


def test_verify_leaves_the_candidate_as_it_was_unless_asked_to_port_into_it():
    candidate = EfficientNetB0()
    snapshot = state_snapshot(candidate)
    report = verify(candidate, EFFICIENTNET, input_size=SMALL, train=False, wide_input_scale=None)
    assert report.bit_exact
    assert_state_unchanged(candidate, snapshot)  # verify() ported into a copy
    assert candidate.training
    verify(candidate, EFFICIENTNET, input_size=SMALL, train=False, wide_input_scale=None, port_into_candidate=True)
    # Asked to: the candidate now holds the randomized reference's weights, BatchNorm statistics
    # nothing like a fresh model's.
    assert not torch.equal(candidate.stem[1].running_var, torch.ones(32))
    assert candidate.training  # its mode is given back


# -- the zoo: classic mistakes -------------------------------------------------------------------

def _is(cls):
    return lambda model, name: isinstance(model.get_submodule(name), cls)


MISTAKES = {
    # id: (candidate, reference, first divergence, what the named module must be)
    "resnet50-stride-on-1x1": (lambda: ResNet50(stride_in_reduce=True), RESNET, "stages.1.0.squeeze",
                               lambda m, n: (m.get_submodule(n).kernel_size == (1, 1)
                                             and m.get_submodule(n).stride == (2, 2))),
    "resnet50-bn-eps-in-one-stage": (lambda: ResNet50(eps=1e-3, eps_stage=2), RESNET, "stages.2.0.bypass.norm",
                                     lambda m, n: m.get_submodule(n).eps == 1e-3),
    "resnet50-bn-momentum": (lambda: ResNet50(momentum=0.01), RESNET, "stem.norm",
                             lambda m, n: m.get_submodule(n).momentum == 0.01),
    "resnet50-no-relu-after-add": (lambda: ResNet50(relu_after_add=False), RESNET, "stages.0.0",
                                   lambda m, n: (isinstance(m.get_submodule(n), Unit)
                                                 and not m.get_submodule(n).relu_after_add)),
    "resnet50-shortcut-without-bn": (lambda: ResNet50(bypass_norm=False), RESNET, "stages.0.0.bypass.proj",
                                     lambda m, n: n.startswith("stages.0.0.bypass")),
    "resnet50-max-pool": (lambda: ResNet50(head_pool="max"), RESNET, "pool", _is(nn.AdaptiveMaxPool2d)),
    "mobilenetv3-relu6": (lambda: MobileNetV3Large(relu6=True), MOBILENET, "features.0.filter_act", _is(nn.ReLU6)),
    "mobilenetv3-keras-hard-sigmoid": (lambda: MobileNetV3Large(gate="keras"), MOBILENET, "features.3.attention.gate",
                                       _is(KerasHardSigmoid)),
    "efficientnet-se-from-expanded-width": (lambda: EfficientNetB0(se_from_expanded=True), EFFICIENTNET,
                                            "trunk.1.0.se.fc1",
                                            lambda m, n: isinstance(m.get_submodule(n.rsplit(".", 1)[0]), SE)),
    "efficientnet-seed-drop-connect-in-eval": (efficientnet_b0_seed_drop_connect, EFFICIENTNET, "trunk.1.1",
                                               lambda m, n: (isinstance(m.get_submodule(n), MBConv)
                                                             and m.get_submodule(n).residual)),
    "efficientnet-tf-bn-eps": (lambda: EfficientNetB0(eps=1e-3), EFFICIENTNET, "stem.1",
                               lambda m, n: m.get_submodule(n).eps == 1e-3),
    "efficientnet-tf-bn-momentum": (lambda: EfficientNetB0(momentum=0.01), EFFICIENTNET, "stem.1",
                                    lambda m, n: m.get_submodule(n).momentum == 0.01),
    "efficientnet-se-max-pool": (lambda: EfficientNetB0(se_pool="max"), EFFICIENTNET, "trunk.0.0.se",
                                 lambda m, n: isinstance(m.get_submodule(n), SE) and m.get_submodule(n).pool == "max"),
}


def _input_size(case: str) -> tuple[int, ...]:
    # ResNet-50 at 32x32 ends at 1x1, where max and average pooling agree: that case needs 64.
    return (2, 3, 32, 32) if case.startswith("resnet50") and case != "resnet50-max-pool" else SMALL


@functools.lru_cache(maxsize=None)
def _mistake(case: str) -> tuple[nn.Module, VerifyReport]:
    """The default verification of one zoo mistake, shared by the tests that look at it."""
    build, spec, _, _ = MISTAKES[case]
    candidate = build()
    return candidate, verify(candidate, spec, input_size=_input_size(case))


@pytest.mark.parametrize("case", list(MISTAKES))
def test_mistakes_are_flagged_where_they_live(case):
    _, _, expected, lives_there = MISTAKES[case]
    candidate, report = _mistake(case)
    assert not report.equivalent and not report.bit_exact
    assert report.first_divergence == expected, str(report)
    assert lives_there(candidate, report.first_divergence)
    assert expected in str(report) and report.divergence_detail


def test_block_is_named_when_its_children_agree():
    _, report = _mistake("resnet50-no-relu-after-add")
    assert report.first_divergence == "stages.0.0"
    inside = report.layers[report.layers["candidate"].str.startswith("stages.0.0.")]
    assert len(inside) == 8 and (inside["eval_max_rel"] == 0).all()  # every conv and BN in it agrees
    assert "while its inputs agree" in report.divergence_detail


def test_momentum_is_caught_by_the_running_statistics():
    _, report = _mistake("efficientnet-tf-bn-momentum")
    assert report.checks["eval output"].bit_exact and report.checks["train output"].bit_exact
    assert "running_mean" in report.divergence_detail
    assert not report.layers.set_index("candidate").loc["stem.1", "ok"]
    assert report.layers.set_index("candidate").loc["stem.0", "ok"]


def test_random_numbers_in_eval_are_reported():
    _, report = _mistake("efficientnet-seed-drop-connect-in-eval")
    assert report.notes[0].startswith(
        "the candidate draws random numbers in eval mode: rand_like in trunk.1.1, trunk.2.1,")
    assert any(note.startswith("the candidate draws random numbers in train mode") for note in report.notes)


class Concatenating(nn.Module):
    """A dense layer: a convolution's output concatenated with its input, in one order or the other, then
    flipped left to right or scaled, if asked."""

    def __init__(self, new_first: bool, flip: bool = False, scale: float = 1.0) -> None:
        super().__init__()
        self.new_first, self.flip, self.scale = new_first, flip, scale
        self.conv, self.bn, self.fc = nn.Conv2d(4, 3, 3, padding=1), nn.BatchNorm2d(7), nn.Linear(7, 2)

    def forward(self, x):
        y = self.conv(x)
        z = torch.cat([y, x] if self.new_first else [x, y], 1) * self.scale
        return self.fc(self.bn(z.flip(-1) if self.flip else z).mean((2, 3)))


@pytest.mark.parametrize("candidate, words", [
    (Concatenating(new_first=True),
     "the reference's values with the channels (dimension 1) in another order at each position"),
    (Concatenating(new_first=False, flip=True), "the reference's values, arranged otherwise"),
    (Concatenating(new_first=False, scale=1.5), ""),
], ids=["concatenated-in-another-order", "arranged-otherwise", "other-values"])
def test_the_same_values_in_another_order_are_said_to_be(candidate, words):
    """kuangliu's CIFAR DenseNet concatenates [new, old] where torchvision's concatenates [old, new]."""
    report = verify(candidate, Concatenating(new_first=False), input_size=(2, 4, 8, 8))
    assert not report.equivalent and "the input of bn differs" in report.divergence_detail, str(report)
    if words:
        assert words in report.divergence_detail, report.divergence_detail
    else:
        assert "in another order" not in report.divergence_detail
        assert "arranged otherwise" not in report.divergence_detail


class PoolAndNorm(nn.Module):
    """A max-pool and a BatchNorm in one order or the other: they commute under positive BatchNorm scales alone."""

    def __init__(self, pool_first: bool) -> None:
        super().__init__()
        self.pool_first = pool_first
        self.conv, self.bn, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv(x)
        y = self.bn(self.pool(y)) if self.pool_first else self.pool(self.bn(y))
        return self.fc(y.relu().mean((2, 3)))


def test_outputs_that_agree_beside_a_module_that_differs_are_said_to_agree_by_these_weights():
    """The randomized BatchNorm scales are positive, so the outputs agree; the functions are not the same."""
    report = verify(PoolAndNorm(pool_first=True), PoolAndNorm(pool_first=False), input_size=(2, 3, 8, 8), train=False)
    assert report.checks["eval output"].ok(report.rtol) and report.levels["eval"].holds is False, str(report)
    assert "the outputs agree on these inputs, yet a module's output differs" in report.divergence_detail
    assert "level train step: not checked (train=False)" in str(report)


def test_structure_mismatch_names_unpaired_tensors_of_both_models():
    _, report = _mistake("efficientnet-se-from-expanded-width")
    text = str(report)
    assert not report.structure_matches and report.port is None and math.isnan(report.max_abs_diff)
    assert "trunk.1.0.se.fc1.weight [24, 96, 1, 1]" in report.unpaired_candidate[0]
    assert any(t.startswith("blocks.1.0.se.conv_reduce.weight [4, 96, 1, 1]") for t in report.unpaired_reference)
    assert len(report.unpaired_candidate) == len(report.unpaired_reference) == 60  # 15 SE blocks x 4 tensors
    for line in report.unpaired_candidate + report.unpaired_reference:
        assert line in text
    # Everything else still pairs: the mismatch does not hide the rest of the network.
    assert len(report.layers) == 131 - 30


def test_missing_module_is_placed_after_its_partner():
    _, report = _mistake("resnet50-shortcut-without-bn")
    assert report.unpaired_candidate == []
    assert [t.split(" ")[0] for t in report.unpaired_reference[:5]] == [
        f"layer1.0.downsample.1.{n}" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    assert "layer1.0.downsample.1" in report.divergence_detail and "stages.0.0.bypass.proj" in report.divergence_detail


# -- the suite's own families: dataflow pairing agrees with their hand-written porting rules ------

REPRESENTATIVES = ("timm:resnet18", "torchvision:resnet50", "timm:densenet121", "torchvision:densenet121",
                   "timm:tf_efficientnet_b0", "torchvision:efficientnet_b0", "timm:mobilenetv3_large_100",
                   "timm:mobilenetv1_100")


def _representatives() -> list[str]:
    """The specs above that are registered, and the first reference of any family they miss."""
    chosen = [s for s in REPRESENTATIVES if s in repro.REFERENCES]
    covered = {repro.MODELS[repro.REFERENCES[s].model].family for s in chosen}
    for spec, entry in sorted(repro.REFERENCES.items()):
        if repro.MODELS[entry.model].family not in covered:
            chosen.append(spec)
            covered.add(repro.MODELS[entry.model].family)
    return chosen


@pytest.mark.parametrize("spec", _representatives())
def test_dataflow_pairing_matches_the_registered_porting_rules(spec):
    entry = repro.REFERENCES[spec]
    ours = create_model_from_entry(entry, **entry.deterministic_model_kwargs)
    report = verify(ours, spec, input_size=SMALL, train=False, wide_input_scale=None,
                    reference_kwargs=entry.deterministic_reference_kwargs)
    assert report.equivalent, str(report)
    ref = reference.create(spec, **entry.deterministic_reference_kwargs)
    by_rules = {(p.source_key, p.target_key) for p in plan_port(ref.state_dict(), ours.state_dict(), entry.rules)}
    assert {(p.source_key, p.target_key) for p in report.port.pairs} == by_rules


# -- pairing by dataflow -------------------------------------------------------------------------

class Fork(nn.Module):
    """Two branches of different widths, added after a projection."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.a_bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(3, 4, 1)
        self.b_up = nn.Conv2d(4, 8, 1)
        self.fc = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        y = torch.relu(self.a_bn(self.a(x))) + self.b_up(self.b(x))
        return self.fc(y.mean((2, 3), keepdim=True)).flatten(1)


class ForkRenamed(nn.Module):
    """``Fork`` with other names, another definition order, the other branch first, and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8, 5)
        self.widen = nn.Conv2d(4, 8, 1)
        self.narrow = nn.Conv2d(3, 4, 1)
        self.norm = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

    def forward(self, x):
        side = self.widen(self.narrow(x))
        return self.head((side + torch.relu(self.norm(self.conv(x)))).mean((2, 3)))


def test_pairs_by_dataflow_not_names_order_or_branch_order():
    reference = Fork()
    snapshot = state_snapshot(reference)
    report = verify(ForkRenamed(), reference, input_size=(2, 3, 8, 8))
    assert report.equivalent, str(report)
    pairs = dict(zip(report.layers["candidate"], report.layers["reference"], strict=True))
    assert pairs == {"narrow": "b", "widen": "b_up", "conv": "a", "norm": "a_bn", "head": "fc"}
    assert [p.source_key for p in report.port.transformed] == ["fc.weight"]  # 1x1 conv -> Linear
    assert_state_unchanged(reference, snapshot)  # a reference module is copied, never changed


class Twins(nn.Module):
    def __init__(self, right=torch.sigmoid) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 4, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        self.act = right

    def forward(self, x):
        return self.fc((torch.relu(self.left(x)) + self.act(self.right(x))).mean((2, 3)))


def test_tie_the_dataflow_cannot_break_is_settled_by_trying_or_refused_with_the_candidates():
    # Only the activations after them tell the twins apart: of the two ways to pair them, one verifies.
    report = verify(Twins(), Twins(), input_size=(2, 3, 8, 8))
    assert report.bit_exact and "tie settled by trying 2 assignments" in str(report), str(report)
    # With the same activation on both, both ways verify: which is which cannot be decided.
    with pytest.raises(PairingError, match="refusing to guess") as err:
        verify(Twins(torch.relu), Twins(torch.relu), input_size=(2, 3, 8, 8))
    assert "candidate left, right <-> reference left, right" in str(err.value)


class InPlaceOnView(nn.Module):
    """Changes a convolution's output through a view of it, which no operation name gives away."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        y[:, :2].mul_(3.0)
        return self.fc(y.mean((2, 3)))


def test_values_changed_in_place_through_a_view_are_not_compared_stale():
    assert verify(InPlaceOnView(), InPlaceOnView(), input_size=(2, 3, 8, 8)).bit_exact


def test_unused_module_is_reported():
    candidate = ForkRenamed()
    candidate.spare = nn.Linear(3, 3)
    report = verify(candidate, Fork(), input_size=(2, 3, 8, 8))
    assert not report.equivalent
    assert report.unpaired_candidate == ["spare.weight [3, 3] (Linear, never called)",
                                         "spare.bias [3] (Linear, never called)"]


def test_port_false_compares_the_weights_as_they_are():
    reference = Fork()
    assert verify(copy.deepcopy(reference), reference, input_size=(2, 3, 8, 8), port=False).bit_exact
    other = Fork()
    report = verify(other, reference, input_size=(2, 3, 8, 8), port=False)
    assert not report.equivalent and report.first_divergence in ("a", "b")


def test_model_that_fails_to_run_is_a_verify_error():
    with pytest.raises(VerifyError, match="candidate fails"):
        verify(nn.Sequential(nn.Conv2d(4, 8, 3)), Fork(), input_size=(2, 3, 8, 8))
    with pytest.raises(UnknownNameError, match="resnet5"):
        verify(Fork(), "timm:resnet5", input_size=(2, 3, 8, 8))


def test_report_serializes():
    report = verify(ForkRenamed(), Fork(), input_size=(2, 3, 8, 8))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["equivalent"] is True and data["first_divergence"] is None
    assert {row["candidate"] for row in data["layers"]} == {"narrow", "widen", "conv", "norm", "head"}
    assert "| candidate" in report.to_markdown()


def test_repro_verify_is_callable():
    report = repro.verify(ForkRenamed(), Fork(), input_size=(2, 3, 8, 8))
    assert isinstance(report, repro.VerifyReport) and report.equivalent
    assert repro.verify is verify and "verify" in repro.__all__
    assert sys.modules["repro.verify"].verify is verify  # the package stays importable (python -m repro.verify)


# -- repro.testing -------------------------------------------------------------------------------

def test_assert_equivalent():
    assert assert_equivalent(ForkRenamed(), Fork(), input_size=(2, 3, 8, 8)).equivalent
    with pytest.raises(AssertionError, match="not bit-identical"):  # Linear head vs 1x1 convolution
        assert_equivalent(ForkRenamed(), Fork(), input_size=(2, 3, 8, 8), bit_exact=True, seed=3)
    broken = ForkRenamed()
    broken.norm.eps = 1e-2
    with pytest.raises(AssertionError, match="first divergence: norm"):
        assert_equivalent(broken, Fork(), input_size=(2, 3, 8, 8))


# -- command line --------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repro.verify", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_cli_flags_a_zoo_mistake():
    result = _cli("tests/zoo/efficientnet_b0.py:efficientnet_b0_seed_drop_connect", "--against", EFFICIENTNET,
                  "--input-size", "64")
    assert result.returncode == 1, result.stderr
    assert "first divergence: trunk.1.1" in result.stdout and "NOT EQUIVALENT" in result.stdout
    assert "| trunk.1.1.deflate.0" in result.stdout  # the markdown table of modules


def test_cli_json_and_exit_codes(tmp_path):
    models = tmp_path / "models.py"
    models.write_text(
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.body = nn.Conv2d(3, 4, 3, padding=1)\n"
        "        self.head = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.body(x).relu().mean((2, 3)))\n"
        "def renamed():\n"
        "    net = Net()\n"
        "    net.trunk = net.body\n"
        "    del net.body\n"
        "    net.forward = lambda x: net.head(net.trunk(x).relu().mean((2, 3)))\n"
        "    return net\n"
    )
    result = _cli(f"{models}:renamed", "--against", f"{models}:Net", "--input-size", "2", "3", "8", "8",
                  "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["equivalent"] and data["bit_exact"] and data["first_divergence"] is None
    assert [(row["candidate"], row["reference"]) for row in data["layers"]] == [("trunk", "body"), ("head", "head")]

    missing = _cli(f"{models}:Nope", "--against", RESNET)
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "no attribute 'Nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize("args, message", [
    (["tests/zoo/nope.py:X", "--against", RESNET], "cannot read tests/zoo/nope.py"),
    (["tests/zoo/resnet50.py:WIDTHS", "--against", RESNET], "not a module class or factory"),
    (["tests/zoo/resnet50.py:ResNet50", "--against", "timm:resnet5"], "timm has no model 'resnet5'"),
    (["tests/zoo/resnet50.py:ResNet50", "--against", "nosuchlib:thing"], "cannot import module 'nosuchlib'"),
    (["tests/zoo/resnet50.py:ResNet50"], "--against"),
    (["tests/zoo/resnet50.py", "--against", RESNET], "expected path/to/file.py:ATTR"),
    (["tests/zoo/resnet50.py:ResNet50", "--against", RESNET, "--input-size", "2", "x"], "--input-size"),
    (["tests/zoo/resnet50.py:ResNet50", "--against", RESNET, "--format", "yaml"], "--format"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_cli_broken_user_code_is_bad_input(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nfrom torch import nn\nundefined_name\n")
    needs_args = tmp_path / "needs_args.py"
    needs_args.write_text("from torch import nn\nclass Net(nn.Module):\n    def __init__(self, width):\n"
                          "        super().__init__()\n")
    assert main([f"{broken}:Net", "--against", RESNET]) == 2
    assert "NameError" in capsys.readouterr().err
    assert main([f"{needs_args}:Net", "--against", RESNET]) == 2
    assert "missing 1 required positional argument" in capsys.readouterr().err
    not_a_module = tmp_path / "not_a_module.py"
    not_a_module.write_text("def make():\n    return 3\n")
    assert main([f"{not_a_module}:make", "--against", RESNET]) == 2
    assert "make() returned an object of type int, not an nn.Module" in capsys.readouterr().err


def test_cli_whatever_user_code_or_a_refused_option_raises_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    """Exit 1 means 'not equivalent': a script reads any crash as a verdict. The user's file, module or factory
    failing with any exception (a KeyError at import, an exception class of its own, a SyntaxError in a module
    named as package.module), a forward pass dividing by zero, a keyword the reference library refuses with an
    assertion, and a seed no generator takes: each is one line, exit 2."""
    (tmp_path / "at_import.py").write_text("raise KeyError('at import')\n")
    (tmp_path / "syntax_error.py").write_text("def broken(:\n")
    (tmp_path / "models.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Own(Exception):\n    pass\n"
        "def factory():\n    raise Own('no model today')\n"
        "class Divides(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(3, 4)\n"
        "    def forward(self, x):\n        return self.fc(x.mean((2, 3))) / (1 // int(self.training == False))\n"
        "class Small(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(3, 4)\n"
        "    def forward(self, x):\n        return self.fc(x.mean((2, 3)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cases = [
        ([f"{tmp_path / 'at_import.py'}:X", "--against", RESNET], "KeyError: 'at import'"),
        (["at_import:X", "--against", RESNET], "KeyError"),
        (["syntax_error:X", "--against", RESNET], "SyntaxError"),
        ([f"{tmp_path / 'models.py'}:factory", "--against", RESNET], "Own: no model today"),
        ([f"{tmp_path / 'models.py'}:Divides", "--against", f"{tmp_path / 'models.py'}:Small", "--input-size", "8"],
         "ZeroDivisionError"),
        ([f"{tmp_path / 'models.py'}:Small", "--against", "timm:resnet18", "--input-size", "32",
          "--reference-kwargs", '{"global_pool": "bogus"}'], "cannot build timm:resnet18"),
        ([f"{tmp_path / 'models.py'}:Small", "--against", f"{tmp_path / 'models.py'}:Small", "--input-size", "8",
          "--seed", str(2**70)], "seed must be an integer from 0"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (args, err)
