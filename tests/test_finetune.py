"""Fine-tuning helpers: new classifier, freezing by pattern and by stage, frozen BatchNorm kept in eval mode."""

import copy

import pytest
import torch
from torch import nn

import reference
import repro
from repro.training.data import synthetic_shapes
from repro.training.finetune import (
    classifier_name,
    count_trainable,
    fine_tune,
    freeze,
    freeze_all_but,
    freeze_up_to,
    is_frozen_batchnorm,
    replace_classifier,
    seed_freeze,
    unfreeze,
)
from repro.training.loop import Recipe


def test_seed_count_resnet50_ten_classes():
    model = repro.create_model("resnet50")
    head = replace_classifier(model, 10)
    assert model.fc is head and head.out_features == 10
    freeze_all_but(model, ["fc"])
    counts = count_trainable(model)
    assert counts.trainable == 2048 * 10 + 10 == 20_490
    assert counts.frozen == 23_508_032
    assert str(counts).splitlines() == ["trainable parameters: 20,490 (0.09%)", "frozen parameters: 23,508,032"]


def test_frozen_batchnorm_stays_in_eval_mode_after_train():
    model = repro.create_model("resnet18", num_classes=4)
    freeze_all_but(model, ["layer4", "fc"])
    model.train()
    assert not model.bn1.training and not model.layer3[1].bn2.training
    assert model.layer4[0].bn1.training and model.fc.training
    assert isinstance(model.bn1, nn.BatchNorm2d) and is_frozen_batchnorm(model.bn1)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("layer4", "fc"))}
    model(torch.randn(4, 3, 64, 64))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen BatchNorm updated its running statistics"
    assert not torch.equal(after["layer4.0.bn1.running_mean"], torch.zeros(512))  # the trainable stage did update
    # state dicts keep their keys; unfreezing restores plain BatchNorm in the model's mode
    assert set(after) == set(repro.create_model("resnet18", num_classes=4).state_dict())
    unfreeze(model)
    assert type(model.bn1) is nn.BatchNorm2d and model.bn1.training
    assert count_trainable(model).frozen == 0


def test_seed_freeze_leaves_batchnorm_statistics_moving():
    """The seed's 6.1 recipe: requires_grad=False, then model.train(): running statistics still change."""
    model = seed_freeze(repro.create_model("resnet18", num_classes=4)).train()
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, 3, 64, 64))
    assert not torch.equal(before, model.bn1.running_mean)


def test_freeze_by_stage_and_pattern():
    model = repro.create_model("resnet18")
    freeze_up_to(model, "layer2")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "conv1.weight" in frozen and "layer2.1.bn2.bias" in frozen
    assert not any(n.startswith(("layer3", "layer4", "fc")) for n in frozen)
    unfreeze(model)
    freeze(model, ["*.bn*.weight", "layer4"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "layer1.0.bn1.weight" in frozen and "layer1.0.bn1.bias" not in frozen and "layer4.1.conv2.weight" in frozen
    assert not is_frozen_batchnorm(model.layer1[0].bn1)  # its bias is still trained
    assert is_frozen_batchnorm(model.layer4[0].bn1)


def test_module_paths_not_substrings():
    """The seed's ``'fc' not in name`` also keeps an SE network's se.fc1/fc2 trainable; module paths do not."""
    model = reference.create("timm:seresnet18")
    seed_counts = count_trainable(seed_freeze(copy.deepcopy(model)))
    ours = count_trainable(freeze_all_but(model, ["fc"]))
    assert ours.trainable == 512 * 1000 + 1000
    assert seed_counts.trainable > ours.trainable


def test_bad_names_are_errors():
    model = repro.create_model("resnet18")
    with pytest.raises(ValueError, match="'layer9' match no parameter"):
        freeze_all_but(model, ["layer9"])
    with pytest.raises(ValueError, match="no module with parameters"):
        freeze_up_to(model, "layer9")
    with pytest.raises(TypeError, match="list of names"):
        freeze(model, "fc")
    with pytest.raises(ValueError, match="no classifier"):
        replace_classifier(nn.Sequential(nn.Conv2d(3, 3, 1)), 3)


@pytest.mark.parametrize("spec", ["torchvision:efficientnet_b0", "torchvision:mobilenet_v3_small"])
def test_sequential_classifiers(spec):
    model = reference.create(spec)
    name = classifier_name(model)
    head = replace_classifier(model, 7)
    assert model.get_submodule(name) is head and isinstance(head, nn.Linear)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_conv_head_classifier():
    model = repro.create_model("resnetv2_18")  # classifier is a 1x1 convolution
    head = replace_classifier(model, 5)
    assert isinstance(head, nn.Conv2d) and head.out_channels == 5
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_fine_tune_loads_weights_file(tmp_path):
    source = reference.create("torchvision:resnet18")
    with torch.no_grad():
        source.layer1[0].conv1.weight.mul_(2.0)
        source.bn1.running_mean.fill_(0.25)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    data = synthetic_shapes(n_train=64, n_test=16, resolution=32)
    model, result, counts = fine_tune("torchvision:resnet18", data, Recipe(iterations=2, batch_size=16, eval_points=1),
                                      weights=path, device="cpu", log=None)
    assert counts.trainable == 512 * 10 + 10
    state = model.state_dict()
    for key, tensor in source.state_dict().items():  # the frozen backbone is the file's, unchanged by training
        if not key.startswith("fc."):
            assert torch.equal(state[key], tensor), key
    assert state["fc.weight"].shape == (10, 512)
    assert len(result.curve) == 1 and 0.0 <= result.final_test_error <= 1.0


def test_fine_tune_bad_weights_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(reference.create("torchvision:resnet34").state_dict(), path)
    data = synthetic_shapes(n_train=16, n_test=8, resolution=32)
    with pytest.raises(repro.WeightsError, match="does not fit"):
        fine_tune("torchvision:resnet18", data, Recipe(iterations=1, batch_size=8), weights=path, log=None)


def test_fine_tune_cli(tmp_path, capsys):
    from repro.training import finetune

    path = tmp_path / "w.pth"
    torch.save(reference.create("torchvision:resnet18").state_dict(), path)
    out = tmp_path / "out"
    assert finetune.main(["--weights", str(path), "--iterations", "2", "--train-size", "32", "--test-size", "16",
                          "--batch-size", "16", "--freeze-up-to", "layer3", "--out", str(out)]) == 0
    assert "trainable parameters: 8,398,858 (75.11%)" in capsys.readouterr().err  # layer4 + the 10-class fc
    assert {p.name for p in out.iterdir()} == {"finetune_curve.csv", "finetune_meta.json"}
    assert finetune.main(["--weights", str(tmp_path / "missing.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
