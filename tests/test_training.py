"""Training experiments: CIFAR networks, data loading, the degradation CLI, the identity test."""

import dataclasses
import json
import pickle
import subprocess
import sys
import statistics

import numpy as np
import pandas as pd
import pytest
import torch

import repro
from repro.flops import count_params
from repro.report.base import Outcome
from repro.models.cifar_resnet import CifarResNet, PadShortcut
from repro.training import degradation
from repro.training.data import DataError, augment, load_cifar10, load_data, load_image_folder, synthetic_shapes
from repro.training import identity
from repro.training.identity import identity_fit, seed_identity_test
from repro.training.loop import Recipe, train


# --- the networks -------------------------------------------------------------------------------


def test_cifar_nets_match_the_paper():
    # ResNet paper, Table 6: ResNet-20 0.27M, ResNet-56 0.85M parameters; option A adds none.
    assert count_params(repro.create_model("resnet20")) == count_params(repro.create_model("plain20")) == 269_722
    assert count_params(repro.create_model("resnet56")) == count_params(repro.create_model("plain56")) == 853_018
    model = repro.create_model("resnet56")
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) + 1 == 56  # 6n + 1 convolutions + fc
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)
    assert count_params(CifarResNet(20, shortcut="B")) > 269_722


def test_plain_net_is_the_residual_net_without_additions():
    residual, plain = repro.create_model("resnet20").eval(), repro.create_model("plain20").eval()
    plain.load_state_dict(residual.state_dict())  # same tensors, same names
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(residual(x), plain(x))
        block = residual.layer1[0]
        h = torch.relu(residual.bn1(residual.conv1(x)))
        assert torch.equal(block(h), torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(h))))) + h))


def test_option_a_shortcut_pads_zeros():
    x = torch.randn(2, 16, 8, 8)
    y = PadShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()


def test_zero_init_residual_starts_as_identity_blocks():
    model = CifarResNet(20, zero_init_residual=True).eval()
    block = model.layer1[1]
    h = torch.rand(1, 16, 8, 8)
    assert torch.equal(block(h), h)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="needs shortcuts"):
        CifarResNet(20, shortcut=None, zero_init_residual=True)


# --- data ----------------------------------------------------------------------------------------


def _write_fake_cifar(root, per_batch=4):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"batch_label": name.encode(),
        }
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


def test_cifar_python_format(tmp_path):
    root = _write_fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_data(tmp_path)  # the directory above cifar-10-batches-py works too
    assert data.name == "CIFAR-10" and data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    with open(root / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    # pixels are stored channel-major (1024 red, 1024 green, 1024 blue), row by row
    assert torch.equal(data.train_x[4, 1, 0, :5], torch.from_numpy(raw[b"data"][0, 1024:1029]))
    assert data.train_y[4] == raw[b"labels"][0]
    (root / "test_batch").unlink()
    with pytest.raises(DataError, match="missing test_batch"):
        load_cifar10(root)


def test_cifar_corrupt_batch(tmp_path):
    root = _write_fake_cifar(tmp_path / "c")
    (root / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3: not a readable CIFAR-10 batch"):
        load_cifar10(root)


def _write_images(folder, classes, per_class, size=(40, 30)):
    from PIL import Image

    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (40 * c, 10 * i, 200)).save(folder / name / f"{i}.png")


def test_image_folder(tmp_path):
    _write_images(tmp_path / "flat", ["cat", "dog"], 6)
    data = load_image_folder(tmp_path / "flat", resolution=16)
    assert data.classes == ("cat", "dog") and data.train_x.shape[1:] == (3, 16, 16)
    assert len(data.train_x) + len(data.test_x) == 12 and len(data.test_x) == 2
    _write_images(tmp_path / "split" / "train", ["a", "b", "c"], 2)
    _write_images(tmp_path / "split" / "val", ["a", "b", "c"], 1)
    data = load_data(tmp_path / "split", resolution=8)
    assert (len(data.train_x), len(data.test_x), data.num_classes) == (6, 3, 3)
    assert data.test_y.tolist() == [0, 1, 2] and data.test_x.dtype == torch.uint8


def test_bad_data_paths(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        load_data(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        load_data(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not an image folder"):
        load_data(tmp_path / "empty")


def test_synthetic_data_is_reproducible_and_balanced():
    a = synthetic_shapes(n_train=200, n_test=50, resolution=16, seed=3)
    b = synthetic_shapes(n_train=200, n_test=50, resolution=16, seed=3)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, synthetic_shapes(n_train=200, n_test=50, resolution=16, seed=4).train_x)
    assert a.train_x.shape == (200, 3, 16, 16) and a.num_classes == 10
    assert torch.bincount(a.train_y, minlength=10).min() > 5


def test_augment_crops_and_flips():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    flipped_or_not = augment(x, g, pad=0)
    for i in range(2):
        assert torch.equal(flipped_or_not[i], x[i]) or torch.equal(flipped_or_not[i], x[i].flip(-1))
    y = augment(x, g, pad=2)
    assert y.shape == x.shape


# --- the training loop and the degradation CLI ---------------------------------------------------


def test_same_recipe_same_result():
    data = synthetic_shapes(n_train=64, n_test=16, resolution=16)
    recipe = Recipe(iterations=3, batch_size=16, eval_points=1)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        results.append(train(CifarResNet(8), data, recipe, device="cpu", log=None))
    assert results[0].curve[0]["train_loss"] == results[1].curve[0]["train_loss"]
    with pytest.raises(ValueError, match="fractions"):
        Recipe(milestones=(32_000,))


def test_degradation_cli_writes_curves(tmp_path, capsys):
    out = tmp_path / "deg"
    argv = [
        "--iterations",
        "4",
        "--depths",
        "8",
        "14",
        "--train-size",
        "64",
        "--test-size",
        "32",
        "--batch-size",
        "16",
        "--eval-points",
        "2",
        "--out",
        str(out),
    ]
    assert degradation.main(argv) == 0
    assert {p.name for p in out.iterdir()} == {
        "degradation_curves.csv",
        "degradation_final.csv",
        "degradation_curves.png",
        "degradation_meta.json",
    }
    curves = pd.read_csv(out / "degradation_curves.csv")
    assert sorted(curves["model"].unique()) == ["plain14", "plain8", "resnet14", "resnet8"]
    assert (
        curves.groupby("model")["iteration"].apply(list)
        == pd.Series([[2, 4]] * 4, index=sorted(curves["model"].unique()))
    ).all()
    assert curves[["train_error", "test_error"]].apply(lambda c: c.between(0, 1)).all().all()
    final = pd.read_csv(out / "degradation_final.csv")
    assert list(final["model"]) == ["plain8", "resnet8", "plain14", "resnet14"]
    assert (final["comparable to paper"] == "no").all()
    meta = json.loads((out / "degradation_meta.json").read_text())
    assert meta["recipe"]["iterations"] == 4 and meta["train_images"] == 64 and "--depths 8 14" in meta["command"]
    assert set(meta["verdict"]) == {"plain_degrades", "resnet_degrades", "resnet_beats_plain_at_depth"}
    assert (out / "degradation_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_degradation_cli_reads_cifar(tmp_path):
    _write_fake_cifar(tmp_path / "cifar")
    out = tmp_path / "deg"
    assert (
        degradation.main(
            [
                "--data",
                str(tmp_path / "cifar"),
                "--iterations",
                "1",
                "--depths",
                "8",
                "14",
                "--batch-size",
                "8",
                "--eval-points",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    meta = json.loads((out / "degradation_meta.json").read_text())
    assert meta["data"].startswith("CIFAR-10") and meta["recipe"]["augment"] is True


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "/no/such/dir"], "--data /no/such/dir: no such file or directory"),
        (["--depths", "20", "21"], "21 is not 6n + 2"),
        (["--iterations", "0"], "--iterations must be positive"),
    ],
)
def test_degradation_cli_bad_arguments(argv, message, capsys):
    assert degradation.main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {message}" or (message in err and len(err.strip().splitlines()) == 1)


def test_degradation_cli_bad_data_exit_2_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "repro.training.degradation", "--data", "/no/such/dir"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --data /no/such/dir: no such file or directory"]


# --- the identity test ---------------------------------------------------------------------------


def test_seed_identity_numbers_show_relu_floor():
    numbers = seed_identity_test()
    floor = numbers["best any ReLU-ended block can do, mean |min(x, 0)|"]
    assert numbers["residual gamma 0 |H(x) - x|"] == pytest.approx(floor, abs=1e-6)
    assert numbers["residual gamma 0 max |H(x) - x| on x >= 0"] == 0.0
    assert numbers["plain |H(x) - x|"] > floor and numbers["residual |H(x) - x|"] > floor


def test_identity_fit():
    zero = identity_fit("residual, gamma 0", blocks=2, steps=3)
    assert (zero["relative_mse"] == 0).all()
    plain = identity_fit("plain", blocks=1, steps=5)
    assert plain["relative_mse"].iloc[0] > 0.5 and plain["relative_mse"].iloc[-1] < plain["relative_mse"].iloc[0]
    with pytest.raises(ValueError, match="variant"):
        identity_fit("dense")


# --- gradient sizes along the depth ---------------------------------------------------------------


def test_block_input_gradients_per_block():
    from repro.models.cifar_resnet import CifarBlock
    from repro.training.gradients import block_input_gradients

    torch.manual_seed(0)
    model = repro.create_model("resnet20")
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    grads = block_input_gradients(model, CifarBlock, x, y)
    assert len(grads) == 9 and all(g > 0 for g in grads)
    # a planted vanishing gradient: the gradient leaving layer2.0 backwards scaled by 1e-3 shrinks every gradient
    # measured before it by exactly that, and none after it
    model.layer2[0].register_forward_hook(lambda m, i, out: out.register_hook(lambda g: g * 1e-3) and None)
    scaled = block_input_gradients(model, CifarBlock, x, y)
    assert scaled[0] == pytest.approx(grads[0] * 1e-3, rel=1e-4) and scaled[-1] == pytest.approx(grads[-1], rel=1e-6)
    with pytest.raises(ValueError, match="no BatchNorm2d"):
        block_input_gradients(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4)), torch.nn.BatchNorm2d,
                              x, y)


def test_vanishing_gradient_rule():
    """Exercise 9's premise decided by the deepest plain net's first / last ratio over seeds: all below 1 is a
    vanishing gradient (relieved if the ResNet's ratio is nearer 1); all above 1 a growing one, which leaves a
    claim about training undecided, as do mixed ratios."""
    from repro.report import Outcome
    from repro.report.training import vanishing_gradients_erratum

    def table(plain, resnet):
        return pd.DataFrame(
            [{"model": "plain56", "blocks": 27, "first / last": r} for r in plain]
            + [{"model": "resnet56", "blocks": 27, "first / last": r} for r in resnet]
            + [{"model": "plain20", "blocks": 9, "first / last": 0.001}]  # shallower nets do not decide it
        )

    assert vanishing_gradients_erratum(table([0.01, 0.02], [0.5, 0.6])).outcome is Outcome.HOLDS
    # vanishing but not relieved at initialization: not refuted for training, which is not measured
    unrelieved = vanishing_gradients_erratum(table([0.01, 0.02], [0.001, 0.6]))
    assert unrelieved.outcome is Outcome.UNDECIDED and "through training" in unrelieved.decide
    assert "not relieved at initialization" in unrelieved.measured
    # growing at initialization contradicts the premise there only: the claim is about training, not refuted
    growing = vanishing_gradients_erratum(table([3000, 7000], [17, 18]))
    assert growing.outcome is Outcome.UNDECIDED and "through training" in growing.decide
    mixed = vanishing_gradients_erratum(table([0.5, 2.0], [1, 1]))
    assert mixed.outcome is Outcome.UNDECIDED and "seeds" in mixed.decide


# --- the report page -----------------------------------------------------------------------------


def test_training_page_reads_cli_results(tmp_path, monkeypatch):
    from repro.environment import cpu_threads
    from repro.report import Options, Outcome, render_page
    from repro.report import training as page

    out = tmp_path / "degradation"
    assert (
        degradation.main(
            [
                "--iterations",
                "2",
                "--depths",
                "8",
                "14",
                "--train-size",
                "64",
                "--test-size",
                "32",
                "--batch-size",
                "16",
                "--eval-points",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    monkeypatch.setattr(page, "IDENTITY_STEPS", 2)
    finetune = page.finetune_run
    monkeypatch.setattr(page, "finetune_run", lambda label: finetune(label, iterations=2, n_train=64, n_test=32))
    page.degradation_results.cache_clear()
    page.experiment.results.clear()
    try:
        with cpu_threads(1):  # the experiments run here (not in workers, which would not see the patches)
            result = page.build(Options(models=("plain20",), degradation_dir=out))
            errata = result.errata
    finally:
        page.degradation_results.cache_clear()
        page.experiment.results.clear()
    tables = {t.slug: t for t in result.tables}
    assert (
        f"read from `{out}/`" in tables["degradation_curves"].note
        and "--depths 8 14" in tables["degradation_curves"].note
    )
    assert list(tables["degradation_final"].frame["model"]) == ["plain8", "resnet8", "plain14", "resnet14"]
    counts = tables["finetune_param_counts"].frame.set_index("freezing")
    assert counts.loc["freeze_all_but(['fc'])", "trainable"].tolist()[0] == 20_490
    frozen_bn = tables["finetune_frozen_batchnorm"].frame
    assert frozen_bn["max change, frozen weights"].tolist() == [0.0, 0.0]
    assert (
        frozen_bn["max change, frozen BN running statistics"].iloc[0]
        > 0
        == frozen_bn["max change, frozen BN running statistics"].iloc[1]
    )
    assert {name for name, _ in result.images} == {"degradation_curves.png", "identity_test.png"}
    assert "20,490" in render_page(result, {"torch": "x"})
    claims = {e.claim: e for e in errata}
    count = claims["`fine_tune_model` leaves only the new 10-class fc of ResNet-50 trainable"]
    assert count.holds and "would compute 20,490" in count.measured and "never called" in count.measured
    assert not any(e.holds for e in errata if "printing |H(x) - x|" in e.claim)
    assert all(e.holds for e in errata if "pitfall 3" in e.section)  # the seed's pitfall 3 is right as written
    # the seed's freezing in two claims: the parameters stay (holds), the BatchNorm statistics move (does not)
    params, computes = (e for e in errata if "requires_grad" in e.claim)
    assert params.outcome is Outcome.HOLDS and computes.outcome is Outcome.FAILS
    assert "held-out error" in computes.note and "ResNet-18" in computes.measured  # the model measured is named
    # the degradation rows are decided by the ResNet paper; the local run is context, at its budget, in the note
    degradation_rows = [e for e in errata if e.section == "2.1" and "Table 2" in e.measured]
    assert len(degradation_rows) == 3 and all(e.outcome is Outcome.HOLDS for e in degradation_rows)
    assert all("the local run (2 iterations, 1 seed" in e.note for e in degradation_rows)
    gradients = next(e for e in errata if e.section == "9")  # plain-56's gradients at initialization grow
    assert gradients.outcome is Outcome.UNDECIDED and "it explodes, it does not vanish" in gradients.measured
    assert "init_gradients" in tables
    assert any("degradation" in e.claim for e in errata)
    assert page.build(Options(models=("resnet18",))) is None


@pytest.mark.parametrize("plain_degrades, resnet_degrades", [(True, False), (True, True), (False, False)])
def test_degradation_rows_are_decided_by_the_paper_whatever_the_local_run(plain_degrades, resnet_degrades):
    """The claims are the ResNet paper's and decided by its Table 2 and Figure 4; a 640-iteration, one-seed run
    cannot refute them, so it is context in the note, read at its budget, its errors at the table's precision."""
    from repro.report.training import degradation_errata

    final = pd.DataFrame([{"model": f"{m}{d}", "depth": d, "train error (%)": e}
                          for m, d, e in (("plain", 20, 14.35), ("resnet", 20, 14.25), ("plain", 56, 74.9),
                                          ("resnet", 56, 43.6))])
    meta = {"verdict": {"plain_degrades": plain_degrades, "resnet_degrades": resnet_degrades,
                        "resnet_beats_plain_at_depth": True},
            "recipe": {"iterations": 640, "seed": 0}, "data": "generated"}
    rows = degradation_errata(pd.DataFrame({"epoch": [8.2]}), final, meta)
    assert [r.outcome for r in rows] == [Outcome.HOLDS] * 3 and not any(r.decide for r in rows)
    degradation, relieve, solve = rows
    assert "plain-18 27.94%, plain-34 28.54%" in degradation.measured and "Figure 4" in degradation.measured
    assert "at 34 layers ResNet 25.03%, plain 28.54%" in relieve.measured
    assert "ResNet-18 27.88%, ResNet-34 25.03%" in solve.measured
    assert ("does not separate degradation" in degradation.note) == resnet_degrades
    assert "at depth 20 ResNet 14.25%, plain 14.35% (a tie" in relieve.note  # the table's precision, the tie said
    assert all("640 iterations, 1 seed, 8.2 epochs" in r.note for r in rows)


def _identity_runs(finals: dict[tuple[int, str], list[float]]) -> pd.DataFrame:
    """Per-seed rows as ``identity_experiment`` writes them, with the given final relative MSEs (steps=2)."""
    rows = []
    for (blocks, variant), values in finals.items():
        for seed, value in enumerate(values):
            rows.append({"blocks": blocks, "variant": variant, "seed": seed, "relative MSE at start": 1.5,
                         "relative MSE after 0 steps": 1.0, "relative MSE after 2 steps (train mode)": value,
                         "after 2 steps, eval mode, held-out": value, "steps to relative MSE <= 0.01": None})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("plain, residual, outcome", [
    ([0.5, 0.6, 0.7], [0.1, 0.2, 0.3], Outcome.HOLDS),  # every seed, every depth: residual lower
    ([0.1, 0.2, 0.3], [0.5, 0.6, 0.7], Outcome.FAILS),  # every seed at one depth: plain lower
    ([0.5, 0.1, 0.7], [0.1, 0.2, 0.3], Outcome.UNDECIDED),  # the order changes between seeds: not decided
    ([0.1, 0.2, 0.3], [0.1, 0.2, 0.3], Outcome.UNDECIDED),  # ties: neither lower, nothing decided
    ([0.5, 0.6], [0.1, 0.2], Outcome.UNDECIDED),  # one order, but fewer seeds than MIN_SEEDS
])
def test_the_identity_claim_is_decided_by_the_seeds_agreeing(monkeypatch, plain, residual, outcome):
    from repro.report import training as page

    monkeypatch.setattr(page, "IDENTITY_STEPS", 2)
    n = len(plain)
    runs = _identity_runs({(1, "plain"): plain, (1, "residual"): residual,
                           (8, "plain"): [0.9] * n, (8, "residual"): [0.05] * n})
    lower = sum(r < p for p, r in zip(plain, residual))
    assert identity.residual_below_plain(runs, 2) == {
        1: identity.SeedOrder(lower, sum(p < r for p, r in zip(plain, residual)), n), 8: identity.SeedOrder(n, 0, n)}
    seed_numbers = {"plain |H(x) - x|": 1, "residual |H(x) - x|": 1,
                    "best any ReLU-ended block can do, mean |min(x, 0)|": 0.4}
    claim = page.identity_errata(seed_numbers, runs)[1]
    assert claim.outcome is outcome
    assert f"residual lower in {lower} of {n} seeds" in claim.measured
    assert f"plain {statistics.median(plain):.4f} ({min(plain):.4f} - {max(plain):.4f})" in claim.measured
    assert (outcome is Outcome.UNDECIDED) == bool(claim.decide)
    summary = identity.over_seeds(runs, 2).set_index(["blocks", "variant"])
    assert summary.loc[(1, "plain"), "after 2 steps (min - max)"] == f"{min(plain):.3g} - {max(plain):.3g}"
    assert summary.loc[(1, "plain"), "steps to relative MSE <= 0.01, per seed"] == ", ".join(["> 2"] * n)


def test_identity_runs_of_different_seeds_share_no_random_numbers():
    """Seed s's inputs come from a stream no seed's initialization uses (seed s + 1's weights would)."""
    torch.manual_seed(1)
    weights = torch.randn(16)
    for seed in (0, 1, 2):
        data = torch.Generator().manual_seed(identity.DATA_SEED_OFFSET + seed)
        assert not torch.equal(torch.randn(16, generator=data), weights)


def test_the_seeds_preprocessing_is_read_off_its_text_and_checked_against_the_weights_metadata(monkeypatch):
    from repro.report import training as page
    from repro.seed import text

    printed = text.seed_preprocessing("6.1")
    assert (printed.builder, printed.weights, printed.resize, printed.crop) == ("resnet50", "IMAGENET1K_V1", 256, 224)
    assert printed.mean == (0.485, 0.456, 0.406) and printed.std == (0.229, 0.224, 0.225)
    row = page.preprocessing_erratum()
    assert row.outcome is Outcome.HOLDS and "resize 256, crop 224" in row.measured
    assert "IMAGENET1K_V2 (80.86%) is evaluated at resize 232" in row.note  # the newer weights: another resize
    # The row can fail: the same text with the V2 weights, evaluated at resize 232, does not match.
    monkeypatch.setattr(page, "seed_preprocessing",
                        lambda section: dataclasses.replace(printed, weights="IMAGENET1K_V2"))
    row = page.preprocessing_erratum()
    assert row.outcome is Outcome.FAILS and row.measured.endswith("they differ in resize")
    # A section that prints no pipeline is named, not read as defaults.
    with pytest.raises(ValueError, match="seed section 4.2 prints no model, Resize, CenterCrop, Normalize"):
        text.seed_preprocessing("4.2")
