"""Training page: the degradation experiment (seed 2.1), a real identity test (2.1), fine-tuning (6.1).

Quick mode reads the degradation results that ``python -m repro.training.degradation`` wrote to
the directory ``--degradation DIR`` names (default ``reports/degradation/``, committed with the
command, commit, device and date that produced them, in ``degradation_meta.json``); without them
it runs a smoke-sized experiment and says that it proves nothing. ``--full`` runs the default
experiment itself (the committed run took the time its ``degradation_meta.json`` records). The identity
test, the gradient sizes at initialization and the fine-tuning comparison run live in both modes (seconds).

The degradation claims are the ResNet paper's, and decided by it (Table 2, Figure 4, section 4.1: the
source named in each row); the local run is context beside each verdict, read at its own budget: it
is far shorter than the paper's (64k iterations) and of one seed, too small to refute a claim or to
separate degradation from a deeper net's slower start.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path

import pandas as pd
import torch
from torchvision import transforms

import reference
from repro.environment import cpu_threads
from repro.registry import MODELS, create_model
from repro.models.cifar_resnet import CifarBlock
from repro.report.base import Erratum, Job, Options, Outcome, Page, Table, computed, findings, run_jobs
from repro.seed import RESNET_FIGURE_4, RESNET_TABLE_2, RESNET_TABLE_2_ERROR
from repro.report.measure import torchvision_weights
from repro.seed.text import seed_preprocessing, uncalled_functions
from repro.training import degradation
from repro.training.data import synthetic_shapes
from repro.training.finetune import (
    count_trainable,
    freeze_all_but,
    ported_model,
    replace_classifier,
    seed_freeze,
)
from repro.training.gradients import block_input_gradients
from repro.training.identity import (
    identity_experiment,
    over_seeds,
    plot_identity,
    residual_below_plain,
    seed_identity_test,
)
from repro.training.loop import Recipe, train

CIFAR_NETS = ("plain20", "plain56", "resnet20", "resnet56")
FINETUNE_SPEC = "torchvision:resnet18"
SMOKE = dict(depths=(8, 20), iterations=40, train=2_000, test=500)
IDENTITY_STEPS = 200


# --- degradation -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def degradation_results(full: bool, results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, str]:
    """(curves, final, meta, provenance) from a live run (--full), the CLI output in ``results_dir``, or a smoke run."""
    if not full and (results_dir / "degradation_final.csv").is_file():
        meta = json.loads((results_dir / "degradation_meta.json").read_text())
        provenance = (
            f"read from `{results_dir}/` (not re-run by this report), written by `{meta['command']}` "
            f"at commit {meta['commit']} on {meta['device']}, {meta['date']}, in {meta['wall_seconds']:.0f} s. "
            "Regenerate with that command; `python -m repro.report --full` re-runs it."
        )
        if (
            meta["command"].strip() == "python -m repro.training.degradation"
            and meta["recipe"]["iterations"] != degradation.DEFAULT_ITERATIONS
        ):
            provenance += (
                f" STALE: written with {meta['recipe']['iterations']} iterations, the CLI's default is now "
                f"{degradation.DEFAULT_ITERATIONS}; re-run it."
            )
        return (
            pd.read_csv(results_dir / "degradation_curves.csv"),
            pd.read_csv(results_dir / "degradation_final.csv"),
            meta,
            provenance,
        )
    if full:
        data = synthetic_shapes(
            n_train=degradation.DEFAULT_TRAIN_SIZE,
            n_test=degradation.DEFAULT_TEST_SIZE,
            resolution=degradation.DEFAULT_RESOLUTION,
        )
        depths, iterations = (20, 56), degradation.DEFAULT_ITERATIONS
        provenance = "run by this report (--full), the degradation CLI's default experiment."
    else:
        data = synthetic_shapes(n_train=SMOKE["train"], n_test=SMOKE["test"], resolution=degradation.DEFAULT_RESOLUTION)
        depths, iterations = SMOKE["depths"], SMOKE["iterations"]
        provenance = (
            f"a SMOKE RUN (no results in {results_dir}/): tiny depths and a few iterations, to show the "
            "machinery works. It is no evidence either way; run `python -m repro.training.degradation`."
        )
    recipe = degradation.default_recipe(iterations, data)
    curves, final = degradation.run(data, depths, recipe, log=sys.stderr)
    meta = {"data": data.description, "recipe": recipe.as_dict(), "verdict": degradation.degradation_verdict(final)}
    return curves, final, meta, provenance


def _first_fit(curves: pd.DataFrame, final: pd.DataFrame) -> str:
    """How far the shallowest plain net was from fitting the data at the first evaluation point."""
    shallow = f"plain{final['depth'].min()}"
    first = curves[curves["model"] == shallow].sort_values("iteration").iloc[0]
    return (
        f"{shallow}'s training error was still {100 * first['train_error']:.1f}% after its first "
        f"{int(first['iteration'])} iterations"
    )


def _verdict_text(meta: dict, final: pd.DataFrame) -> str:
    v = meta["verdict"]
    depths = sorted(final["depth"].unique())
    shallow, deep = depths[0], depths[-1]
    err = final.set_index("model")["train error (%)"]
    lines = [
        f"Final training error: plain-{shallow} {err[f'plain{shallow}']:g}%, "
        f"plain-{deep} {err[f'plain{deep}']:g}%, "
        f"ResNet-{shallow} {err[f'resnet{shallow}']:g}%, ResNet-{deep} {err[f'resnet{deep}']:g}%.",
        f"The deeper plain net trained {'worse' if v['plain_degrades'] else 'no worse'} than the shallower one "
        f"({'degradation shown' if v['plain_degrades'] else 'degradation NOT shown on this data and budget'}); "
        f"the deeper ResNet trained {'worse' if v['resnet_degrades'] else 'no worse'} than the shallower one; "
        f"at depth {deep} the ResNet's training error is "
        f"{'below' if v['resnet_beats_plain_at_depth'] else 'not below'} the plain net's.",
    ]
    return " ".join(lines)


def _reading(meta: dict, final: pd.DataFrame) -> str:
    v = meta["verdict"]
    deep = final["depth"].max()
    iterations = meta["recipe"]["iterations"]
    if not v["plain_degrades"]:
        return (
            f"Reading: no degradation on this data and budget ({iterations} iterations); the claim is not shown here."
        )
    if not v["resnet_degrades"]:
        return "Reading: as in the paper, the deeper plain net trains worse and the deeper ResNet does not."
    if v["resnet_beats_plain_at_depth"]:
        return (
            f"Reading: the shortcuts recover part of the gap at {deep} layers, not all of it: at this budget "
            f"({iterations} iterations) the deeper ResNet still trains slower than the shallower one. The paper's "
            "ResNet-56 passes ResNet-20 over 64k iterations; a run this short does not show that part of the claim."
        )
    return (f"Reading: at this budget ({iterations} iterations) the shortcuts did not help the deeper net; "
            "the claim is not shown here.")


# --- identity --------------------------------------------------------------------------------------

IDENTITY_DEPTHS = (1, 8)
# Each seed is one paired comparison of the variants (the same inputs; the layers they share start from the same
# weights); the seeds show whether the order of plain and residual is the same from seed to seed. Three are too few
# for a test that could reject (a sign test's smallest p-value with three pairs is 1/8), so none is run: the claim
# is decided where every seed, at least MIN_SEEDS of them (the same as the degradation claims ask), puts the two in
# one order at every depth.
IDENTITY_SEEDS = (0, 1, 2)
IDENTITY_RUNS = tuple((blocks, seed) for blocks in IDENTITY_DEPTHS for seed in IDENTITY_SEEDS)


def identity_run(run: tuple[int, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The identity test of ``blocks`` stacked blocks with one seed: (rows per variant, curves). Each fit seeds
    itself, so the runs can go apart and be put together."""
    blocks, seed = run
    return identity_experiment(depths=(blocks,), steps=IDENTITY_STEPS, seeds=(seed,))


def identity_results(runs: dict[tuple[int, int], tuple[pd.DataFrame, pd.DataFrame]],
                     ) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(the seed's test, rows of every run, curves of every run) from ``identity_run`` per depth and seed."""
    with cpu_threads(1):
        seed_numbers = seed_identity_test()
    return (
        seed_numbers,
        pd.concat([runs[r][0] for r in IDENTITY_RUNS], ignore_index=True),
        pd.concat([runs[r][1] for r in IDENTITY_RUNS], ignore_index=True),
    )


# --- gradients at initialization ------------------------------------------------------------------

GRADIENT_SEEDS = (0, 1, 2)


def _gradient_seconds(name: str) -> float:
    """Rough one-core seconds (one forward and backward per seed, measured once); only orders the jobs."""
    return 0.4 * len(GRADIENT_SEEDS) * (1 + int(name.removeprefix("plain").removeprefix("resnet")) // 20)


@computed(seconds=_gradient_seconds)
def init_gradients(name: str) -> dict:
    """Per initialization seed, the RMS loss gradient at the first and at the last block's input of
    CIFAR net ``name`` (train mode, one batch of 32 N(0, 1) images at 32x32, random labels)."""
    rows = []
    with cpu_threads(1):
        for seed in GRADIENT_SEEDS:
            torch.manual_seed(seed)
            model = create_model(name)
            gen = torch.Generator().manual_seed(100 + seed)
            x, y = torch.randn(32, 3, 32, 32, generator=gen), torch.randint(0, 10, (32,), generator=gen)
            grads = block_input_gradients(model, CifarBlock, x, y)
            rows.append({"seed": seed, "first block": grads[0], "last block": grads[-1], "blocks": len(grads)})
    return {"model": name, "rows": rows}


def gradient_table(names: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for name in names:
        for r in init_gradients(name)["rows"]:
            rows.append(
                {
                    "model": name,
                    "blocks": r["blocks"],
                    "init seed": r["seed"],
                    "RMS gradient at the first block's input": float(f"{r['first block']:.4g}"),
                    "RMS gradient at the last block's input": float(f"{r['last block']:.4g}"),
                    "first / last": round(r["first block"] / r["last block"], 2),
                }
            )
    return pd.DataFrame(rows)


def vanishing_gradients_erratum(table: pd.DataFrame) -> Erratum:
    """Exercise 9's premise, that without shortcuts the gradient vanishes toward the input, checked in the
    deepest plain net at initialization; and what the shortcuts change."""
    deep = table["blocks"].max()
    plain = table[(table["blocks"] == deep) & table["model"].str.startswith("plain")]
    resnet = table[(table["blocks"] == deep) & table["model"].str.startswith("resnet")]
    ratios = plain["first / last"]
    vanish, grow = (ratios < 1).all(), (ratios > 1).all()
    span = lambda r: "-".join(f"{v:,.0f}" if v >= 100 else f"{v:.3g}" for v in (r.min(), r.max()))  # noqa: E731
    relieved = vanish and (resnet["first / last"] > ratios.max()).all()
    through_training = (
        "the same gradient sizes measured through training (per block, at checkpoints of the degradation run), "
        "where the claim is about training, not initialization"
    )
    return Erratum(
        "9",
        "residual connections relieve vanishing gradients ('分析残差连接为什么能缓解梯度消失问题', exercise 1)",
        # At initialization only: shown there, it holds there; contradicted there (no vanishing, or no relief), a
        # claim about training is not refuted, as training is not measured.
        Outcome.HOLDS if relieved else Outcome.UNDECIDED,
        f"at initialization, in train mode with BatchNorm (as the seed's blocks), over {len(ratios)} seeds: the "
        f"gradient at {plain['model'].iloc[0]}'s first block's input is {span(ratios)}x the one at its last block's "
        + ("(it grows toward the input: it explodes, it does not vanish)" if grow else "")
        + f"; with shortcuts ({resnet['model'].iloc[0]}) {span(resnet['first / last'])}x"
        + (" (no nearer 1 than without: not relieved at initialization)" if vanish and not relieved else ""),
        decide="" if relieved else through_training if vanish or grow else (
            "more initialization seeds: the plain net's ratio falls on both sides of 1"),
        note="what the shortcuts relieve here is a gradient that grows toward the input; during training not "
        "measured. The ResNet paper (section 4.1) argues the plain nets' difficulty is unlikely to be caused by "
        "vanishing gradients, as BatchNorm keeps their norms healthy",
    )


# --- fine-tuning -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def seed_param_counts() -> pd.DataFrame:
    """Seed 6.1's count, reproduced on our ResNet-50 and on torchvision's with the seed's own code."""
    rows = []
    ours = repro_resnet50_ten_classes()
    rows.append({"model": "ours resnet50, 10-class head", "freezing": "freeze_all_but(['fc'])", **_counts(ours)})
    tv = reference.create("torchvision:resnet50")
    tv.fc = torch.nn.Linear(tv.fc.in_features, 10)
    rows.append(
        {
            "model": "torchvision resnet50, 10-class head",
            "freezing": "seed 6.1: 'fc' not in name",
            **_counts(seed_freeze(tv)),
        }
    )
    se = reference.create("timm:seresnet50")
    se.fc = torch.nn.Linear(se.fc.in_features, 10)
    rows.append(
        {
            "model": "timm seresnet50, 10-class head",
            "freezing": "seed 6.1: 'fc' not in name",
            **_counts(seed_freeze(se)),
        }
    )
    rows.append(
        {
            "model": "timm seresnet50, 10-class head",
            "freezing": "freeze_all_but(['fc'])",
            **_counts(freeze_all_but(se, ["fc"])),
        }
    )
    return pd.DataFrame(rows)


def repro_resnet50_ten_classes() -> torch.nn.Module:
    model = create_model("resnet50")
    replace_classifier(model, 10)
    return freeze_all_but(model, ["fc"])


def _counts(model: torch.nn.Module) -> dict:
    c = count_trainable(model)
    return {"trainable": c.trainable, "frozen": c.frozen, "trainable (%)": f"{100 * c.trainable / c.total:.2f}"}


def _backbone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


FINETUNE_FREEZING = {
    "seed 6.1: requires_grad = False, then model.train()": seed_freeze,
    "freeze_all_but(['fc']): frozen BatchNorm kept in eval mode": lambda m: freeze_all_but(m, ["fc"]),
}


FINETUNE_ITERATIONS = 60


def finetune_run(label: str, iterations: int = FINETUNE_ITERATIONS, n_train: int = 3_000, n_test: int = 1_000) -> dict:
    """One short head-only fine-tuning run of the ported ResNet-18 on the generated data, the
    backbone frozen the way ``label`` names (a key of FINETUNE_FREEZING): what it changed, its errors."""
    data = synthetic_shapes(n_train=n_train, n_test=n_test, resolution=32, seed=1)
    recipe = Recipe(iterations=iterations, batch_size=64, lr=0.01, augment=False, eval_points=2, eval_size=n_test)
    probe = (data.test_x[:32].float() / 255 - 0.5) / 0.25
    torch.manual_seed(0)
    model = ported_model(FINETUNE_SPEC)
    replace_classifier(model, data.num_classes)
    FINETUNE_FREEZING[label](model)
    before = _backbone_state(model)
    with torch.no_grad():
        features_before = model.eval().forward_features(probe)
    result = train(model, data, recipe, name="resnet18 head", device="cpu", log=None)
    after = _backbone_state(model)
    with torch.no_grad():
        features_after = model.eval().forward_features(probe)
    stat_change = max(float((after[k].float() - before[k].float()).abs().max()) for k in before if "running" in k)
    weight_change = max(
        float((after[k] - before[k]).abs().max()) for k in before if "running" not in k and "num_batches" not in k
    )
    return {
        "freezing": label,
        **_counts(model),
        "max change, frozen weights": weight_change,
        "max change, frozen BN running statistics": round(stat_change, 4),
        "relative change of eval-mode backbone features": round(
            float((features_after - features_before).norm() / features_before.norm()), 4
        ),
        "train error (%)": round(100 * result.final_train_error, 1),
        "held-out error (%)": round(100 * result.final_test_error, 1),
    }


# --- the experiments, side by side -----------------------------------------------------------------

EXPERIMENTS = (*IDENTITY_RUNS, *FINETUNE_FREEZING)


def _experiment_seconds(name: tuple[int, int] | str) -> float:
    """Rough one-core seconds, measured once (identity: 1.5 s per block; fine-tuning: 11 s); only orders the jobs."""
    return 1.5 * name[0] if isinstance(name, tuple) else 11.0


@computed(seconds=_experiment_seconds)
def experiment(name: tuple[int, int] | str) -> object:
    """One identity run (depth, seed) or one fine-tuning run (a FINETUNE_FREEZING label)."""
    with cpu_threads(1):  # tiny convolutions: one thread is as fast, and immune to busy cores
        return identity_run(name) if isinstance(name, tuple) else finetune_run(name)


def jobs(options: Options) -> list[Job]:
    return experiment.jobs(EXPERIMENTS) + init_gradients.jobs(_cifar_nets()) if _selected(options) else []


def experiments() -> tuple[tuple[dict, pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    """(identity_results(), the fine-tuning comparison: one row per way of freezing). Each run takes
    one thread; the ones not yet made run at once in worker processes where this process has more
    (the same numbers: each run seeds itself)."""
    run_jobs(experiment.jobs(EXPERIMENTS), desc="training experiments")
    return (
        identity_results({r: experiment(r) for r in IDENTITY_RUNS}),
        pd.DataFrame([experiment(label) for label in FINETUNE_FREEZING]),
    )


# --- the page --------------------------------------------------------------------------------------


def _selected(options: Options) -> bool:
    return any(n in MODELS for n in options.selected(CIFAR_NETS))


def _cifar_nets() -> tuple[str, ...]:
    return tuple(n for n in CIFAR_NETS if n in MODELS)


def build(options: Options) -> Page | None:
    if not _selected(options):
        return None
    curves, final, meta, provenance = degradation_results(options.full, options.degradation_dir)  # --full: all threads
    (seed_numbers, identity_per_seed, identity_curves), finetune = experiments()
    identity_summary = over_seeds(identity_per_seed, IDENTITY_STEPS)
    with cpu_threads(1):
        counts = seed_param_counts()
    run_jobs(init_gradients.jobs(_cifar_nets()), desc="gradients at initialization")
    gradients = gradient_table(_cifar_nets())
    deep = final["depth"].max()
    intro = (
        "Seed section 2.1 says residual connections solve the degradation problem (a deeper plain network has "
        "*higher training error*) because a residual block learns an identity mapping more easily, and shows it by "
        "printing |H(x) - x| for two untrained blocks. This page runs the experiment the claim is about and a test "
        "that measures identity learning, and checks the seed's fine-tuning recipe (6.1)."
    )
    data_note = (
        f"Networks: the ResNet paper's CIFAR nets (section 4.2; `repro/models/cifar_resnet.py`): 3x3 convolutions with "
        "16/32/64 channels, 6n+2 layers, option A (zero-padding "
        "identity) shortcuts, so each plain net has exactly the "
        "weights of its ResNet and differs only by the additions. "
        "Recipe: the paper's (SGD, momentum 0.9, weight decay "
        f"1e-4, batch {meta['recipe']['batch_size']}, learning rate "
        f"{meta['recipe']['lr']} divided by 10 at 50% and 75% "
        f"of the run), shortened to {meta['recipe']['iterations']} iterations; every net sees the same batches. "
        f"Data: {meta['data']}. "
        "The default data is generated (`repro.training.data.synthetic_shapes`), "
        "because nothing may be downloaded: ten "
        "classes, each a shape (disk, square, triangle, cross, ring) "
        "filled with stripes near-vertical or near-horizontal, "
        "placed, sized and rotated at random, in a colour whose hue only hints at the class (each class's hue range "
        "overlaps its neighbours'), on a smooth random background with a distractor patch of stripes of the other "
        "orientation, plus pixel noise; not augmented (every image is a fresh random draw already; with `--data` the "
        "paper's crop-and-flip is used). Degradation concerns *training* error, an optimisation property, "
        "so the data need not be natural images; they only have to be hard enough that a 20-layer net does not fit "
        f"them at once, and they are: {_first_fit(curves, final)}. The data are smaller than CIFAR (16x16, 10k "
        "images) so that the run takes minutes on two CPU cores (its wall time is in the source line below); with "
        "`--data` the same code runs CIFAR-10 at 32x32 for the paper's 64k iterations. "
        f"Source of these numbers: {provenance}"
    )
    final_note = (
        f"{_verdict_text(meta, final)} Training error: eval mode, on up to {meta['recipe']['eval_size']} training "
        "images; held-out error: the whole held-out split. The paper's column is its Table 6 CIFAR-10 test error "
        "(64k iterations, augmentation); it is comparable only for a full CIFAR-10 run ('comparable to paper'). "
        "'seconds' is each net's wall time on the machine that ran it; other work on that machine inflates it. "
        + (
            _reading(meta, final)
            if not provenance.startswith("a SMOKE RUN")
            else "Reading: none; a smoke run shows nothing."
        )
    )
    seed_table = pd.DataFrame([{"quantity": k, "value": round(v, 4)} for k, v in seed_numbers.items()])
    seed_note = (
        "The seed's test, re-run as written (64 channels, one 56x56 input x ~ N(0, 1), fresh blocks in train mode): no "
        "block learns anything, so the two numbers measure random initialization. Both blocks end in a ReLU and cannot "
        "output the negative half of x: even a perfect identity-on-the-positive-part scores mean |min(x, 0)| (the "
        "'best any ReLU-ended block can do' row), which is exactly what the residual block with its last BatchNorm "
        "gamma at zero (timm's zero_init_last) computes: relu(0 + x). On non-negative input, what blocks inside a "
        "ResNet receive, that block is the identity exactly (max |H(x) - x| = 0)."
    )
    identity_note = (
        f"The identity test that measures the claim: blocks (one, and a stack of eight) with 16 channels on 8x8 "
        f"non-negative inputs relu(N(0, 1)) are trained with Adam (lr 0.01, batch 16, fresh inputs each step, "
        f"{IDENTITY_STEPS} steps) to output their input. Relative MSE = MSE / mean(x²): 1 is no better than "
        f"outputting zeros. Each configuration is trained from {identity_per_seed['seed'].nunique()} seeds "
        "(initialization and inputs; within a seed every variant sees the same inputs, and the layers the variants "
        "share start from the same weights); the table gives medians, the final value's "
        "range, and the steps to 0.01 seed by seed (every run: [identity_test_per_seed.csv]"
        f"(identity_test_per_seed.csv)). {identity_reading(identity_per_seed)}"
    )
    trainable = int(counts.iloc[0]["trainable"])
    counts_note = (
        "Seed 6.1's `fine_tune_model` replaces ResNet-50's fc with a 10-class layer and freezes every parameter whose "
        f"name lacks 'fc': the seed's code would compute 2048 x 10 + 10 = {trainable:,} trainable parameters"
        + (" (the function is never called, so the seed prints no count)" if "fine_tune_model" in uncalled_functions()
           else "")
        + ". Its substring test is fragile: on an "
        "SE-ResNet ('se.fc1', 'se.fc2') it leaves every squeeze-excitation layer trainable; matching module paths "
        "(`freeze_all_but`) does not."
    )
    finetune_note = (
        f"A short head-only fine-tuning run of `{FINETUNE_SPEC}` ported into the hand-written ResNet-18 (random "
        "weights: no pretrained file was given, so only the mechanics are measured here; "
        "`python -m repro.training.finetune --weights PATH` fine-tunes real weights) on generated data at 32x32, "
        f"{FINETUNE_ITERATIONS} iterations of batch 64, the same batches both times. Frozen the seed's way, "
        "model.train() still normalizes with batch statistics and overwrites every running mean and variance of "
        "the 'frozen' backbone, so its eval-mode features change; with frozen BatchNorm kept in eval mode (seed "
        "pitfall 3 applied to fine-tuning) the backbone is bit-for-bit what was loaded. The held-out errors beside "
        "them show the mechanics, not a recipe comparison (one short run on a random backbone: here letting the "
        "statistics adapt "
        + ("lowered" if finetune["held-out error (%)"].iloc[0] < finetune["held-out error (%)"].iloc[1]
           else "did not lower")
        + " "
        "it); adapting them is a choice to make knowingly, and not what freezing means."
    )
    tables = [
        Table(
            "degradation_final",
            "Degradation: final errors, plain vs residual, depths "
            f"{', '.join(map(str, sorted(final['depth'].unique())))}",
            final,
            final_note,
        ),
        Table(
            "degradation_curves",
            "Degradation: error curves (training error averaged over the batches since the previous point)",
            curves[["model", "iteration", "epoch", "lr", "train_error", "train_loss", "test_error", "test_loss"]],
            data_note,
        ),
        Table("identity_seed_test", "The seed's identity test, re-run", seed_table, seed_note),
        Table("identity_test", "Training blocks to reproduce their input", identity_summary, identity_note),
        Table(
            "init_gradients",
            "Gradient size along the depth at initialization (exercise 9: vanishing gradients)",
            gradients,
            "One train-mode forward and backward pass (BatchNorm on batch statistics) of each CIFAR net, freshly "
            f"initialized with seeds {', '.join(map(str, GRADIENT_SEEDS))}, on 32 images N(0, 1) at 32x32 with random "
            "labels: the RMS gradient of the cross-entropy loss at the input of the first and of the last block "
            "(`repro.training.gradients.block_input_gradients`). first / last below 1 would be a vanishing gradient.",
        ),
        Table("finetune_param_counts", "Fine-tuning: trainable and frozen parameters (seed 6.1)", counts, counts_note),
        Table(
            "finetune_frozen_batchnorm",
            "Fine-tuning: frozen BatchNorm, the seed's way and ours",
            finetune,
            finetune_note,
        ),
    ]
    images = [
        (
            "degradation_curves.png",
            degradation.plot_curves(curves, f"{meta['data']}; {meta['recipe']['iterations']} iterations"),
        ),
        ("identity_test.png", plot_identity(identity_curves)),
    ]
    title = f"Training: degradation (plain vs ResNet up to {deep} layers), identity, fine-tuning (seed 2.1, 6.1)"
    errata = (identity_errata(seed_numbers, identity_per_seed) + finetune_errata(finetune)
              + [batchnorm_modes_erratum(), preprocessing_erratum()])
    if not provenance.startswith("a SMOKE RUN"):
        errata += degradation_errata(curves, final, meta)
    lead = (
        ""
        if provenance.startswith("a SMOKE RUN")
        else "the degradation claims are decided by their source, the ResNet paper (Table 2, Figure 4); the local "
        f"degradation run ({_budget(meta)}, {curves['epoch'].max():.1f} epochs) is context beside each, too small "
        "to refute them"
    )
    errata.append(vanishing_gradients_erratum(gradients))
    opening = findings(errata, lead) + "\n\n"
    per_seed_csv = identity_per_seed.round(6).to_csv(index=False).encode()
    return Page("training", title, opening + intro, tables, images, errata,
                files=[("identity_test_per_seed.csv", per_seed_csv)])


MIN_SEEDS = 3  # what a run at the claim's budget needs to refute one: the gap there is a few points
TIE_POINTS = 1.0  # training errors of one seed this close (percentage points) are read as a tie


def _budget(meta: dict) -> str:
    seeds = len(meta.get("seeds", [meta["recipe"].get("seed", 0)]))
    return f"{meta['recipe']['iterations']} iterations, {seeds} seed{'s' if seeds > 1 else ''}"


def degradation_errata(curves: pd.DataFrame, final: pd.DataFrame, meta: dict) -> list[Erratum]:
    """The degradation claims, decided by their own source, the ResNet paper (Table 2's ImageNet errors of
    plain and residual nets at 18 and 34 layers; Figure 4's training error and section 4.1's reading of it).
    The local run is context in each row's note, read at its budget: one seed and 640 iterations cannot
    refute a claim the paper shows over 64k, nor separate degradation from a deeper net's slower start."""
    v = meta["verdict"]
    err = final.set_index("model")["train error (%)"]
    d = sorted(final["depth"].unique())
    paper = RESNET_TABLE_2_ERROR
    local = f"the local run ({_budget(meta)}, {curves['epoch'].max():.1f} epochs; {meta['data']}; the paper trains 64k)"

    def e(name: str) -> str:  # a training error of the local run, at the precision of the training page's table
        return f"{err[name]:g}%"

    def at_depth(depth: int) -> str:
        plain, res = err[f"plain{depth}"], err[f"resnet{depth}"]
        reading = (f"a tie at one seed, {abs(plain - res):.2g} points apart" if abs(plain - res) < TIE_POINTS
                   else "the ResNet lower" if res < plain else "the ResNet not lower")
        return f"at depth {depth} ResNet {e(f'resnet{depth}')}, plain {e(f'plain{depth}')} ({reading})"

    slower_start = (
        f"; its deeper ResNet trains worse too (ResNet-{d[0]} {e(f'resnet{d[0]}')}, ResNet-{d[-1]} "
        f"{e(f'resnet{d[-1]}')}), so at this budget it does not separate degradation from a deeper net's slower start"
        if v["resnet_degrades"] else ""
    )
    return [
        Erratum(
            "2.1",
            "A deeper plain network has higher training error than a shallower one (degradation)",
            paper["plain34"] > paper["plain18"],
            f"{RESNET_FIGURE_4}: plain-34's training error is above plain-18's throughout training; beside it, "
            f"validation error, {RESNET_TABLE_2}: plain-18 {paper['plain18']:.2f}%, plain-34 {paper['plain34']:.2f}%",
            note=f"{local} {'agrees' if v['plain_degrades'] else 'does not show it'}: training error "
            f"plain-{d[0]} {e(f'plain{d[0]}')}, plain-{d[-1]} {e(f'plain{d[-1]}')}{slower_start}",
        ),
        Erratum(
            "2.1",
            "Residual connections relieve it: at the same depth the ResNet trains better than the plain net",
            paper["resnet34"] < paper["plain34"],
            f"{RESNET_FIGURE_4}: ResNet-34's training error is considerably below plain-34's; beside it, validation "
            f"error, {RESNET_TABLE_2}: at 34 layers ResNet {paper['resnet34']:.2f}%, plain {paper['plain34']:.2f}%. At "
            f"18 layers, where the plain net does not degrade, the two are comparably accurate (ResNet "
            f"{paper['resnet18']:.2f}%, plain {paper['plain18']:.2f}%), the ResNet converging faster",
            note=f"{local}: {at_depth(d[-1])}; {at_depth(d[0])}; too small a run to separate a better-training "
            "net from a faster-starting one",
        ),
        Erratum(
            "2.1",
            "Residual connections solve it: the deeper ResNet trains no worse than the shallower one",
            paper["resnet34"] <= paper["resnet18"],
            f"{RESNET_FIGURE_4}: ResNet-34's training error is below ResNet-18's; beside it, validation error, "
            f"{RESNET_TABLE_2}: ResNet-18 {paper['resnet18']:.2f}%, ResNet-34 {paper['resnet34']:.2f}%",
            note=f"{local} "
            + ("agrees" if not v["resnet_degrades"] else "does not show it at its budget, too short to refute it")
            + f": training error ResNet-{d[0]} {e(f'resnet{d[0]}')}, ResNet-{d[-1]} {e(f'resnet{d[-1]}')}; "
            "the paper's Figure 6 shows it on CIFAR-10 through 64k iterations. Runs that would test it here: "
            f"`python -m repro.training.degradation --data cifar-10-batches-py --iterations 64000 --seed S` over at "
            f"least {MIN_SEEDS} seeds (it wants a GPU)",
        ),
    ]


def batchnorm_modes_erratum() -> Erratum:
    """Seed pitfall 3 as written: train() normalizes with the batch's statistics, eval() with the stored ones."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4)
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(4.0)
    x = torch.randn(8, 4, 5, 5) * 2 + 1
    with torch.no_grad():
        batch = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
            x.var((0, 2, 3), unbiased=False, keepdim=True) + bn.eps
        )
        stored = (x - 3.0) / torch.sqrt(torch.tensor(4.0) + bn.eps)
        eval_out = bn.eval()(x)
        train_out = bn.train()(x)
    ok_train = torch.allclose(train_out, batch, atol=1e-5)
    ok_eval = torch.allclose(eval_out, stored, atol=1e-5)
    return Erratum(
        "7, pitfall 3",
        "model.train(): BatchNorm uses the batch's statistics; model.eval(): the statistics stored in training",
        ok_train and ok_eval,
        f"a BatchNorm2d with stored mean 3, variance 4: in train mode its output is the batch-normalized input "
        f"({'equal' if ok_train else 'NOT equal'}), in eval mode the input normalized by the stored statistics "
        f"({'equal' if ok_eval else 'NOT equal'})",
    )


def preprocessing_erratum() -> Erratum:
    """Seed 6.1's preprocessing against the evaluation transform torchvision's metadata records for the weights the
    seed loads (``weights.transforms()``: the pipeline their top-1 was measured with)."""
    seed = seed_preprocessing("6.1")
    weights = torchvision_weights(seed.builder)
    meta = weights[seed.weights]
    resize_default = inspect.signature(transforms.Resize).parameters["interpolation"].default.value
    steps = {
        "resize": (seed.resize, meta.resize),
        "centre crop": (seed.crop, meta.crop),
        "mean": (seed.mean, meta.mean),
        "std": (seed.std, meta.std),
        "interpolation": (resize_default, meta.interpolation),
    }
    differ = [name for name, (printed, recorded) in steps.items() if printed != recorded]
    others = [w for w in weights.values()
              if w.weights != seed.weights and (w.resize, w.crop) != (meta.resize, meta.crop)]
    return Erratum(
        "6.1",
        f"`Resize({seed.resize})`, `CenterCrop({seed.crop})`, `Normalize(mean, std)` is the preprocessing of "
        f"{seed.builder}'s {seed.weights} weights",
        not differ,
        f"torchvision's metadata for {seed.builder} {seed.weights} (`weights.transforms()`): resize {meta.resize}, "
        f"crop {meta.crop}, mean {list(meta.mean)}, std {list(meta.std)}, {meta.interpolation}; the seed: "
        f"resize {seed.resize}, crop {seed.crop}, mean {list(seed.mean)}, std {list(seed.std)}, {resize_default} "
        "(Resize's default)" + (f"; they differ in {', '.join(differ)}" if differ else ""),
        note="; ".join(f"{w.weights} ({w.top1:.2f}%) is evaluated at resize {w.resize}, crop {w.crop}: the same "
                       "pipeline with those weights is not theirs" for w in others),
    )


def finetune_errata(finetune: pd.DataFrame) -> list[Erratum]:
    """Seed 6.1's count and its freezing, read off the fine-tuning tables."""
    counts = count_trainable(repro_resnet50_ten_classes())
    seed_way, kept = finetune.iloc[0], finetune.iloc[1]
    stats_move = bool(seed_way["max change, frozen BN running statistics"] > 0)
    # The claim is about the seed's ResNet-50; the run is the fine-tuning table's, named as measured.
    measured_on = (
        f"ResNet-18 (`{FINETUNE_SPEC}` ported into the hand-written one), random weights, head-only fine-tuning on "
        f"generated 32x32 images, {FINETUNE_ITERATIONS} iterations of batch 64 (the fine-tuning table)"
    )
    return [
        Erratum(
            "6.1",
            "`fine_tune_model` leaves only the new 10-class fc of ResNet-50 trainable",
            counts.trainable == 2048 * 10 + 10,
            f"the seed's code would compute {counts.trainable:,} trainable (2048 x 10 + 10) and {counts.frozen:,} "
            f"frozen parameters ({100 * counts.trainable / counts.total:.2f}%)"
            + (" (the function is never called, so the seed prints neither)"
               if "fine_tune_model" in uncalled_functions() else ""),
        ),
        Erratum(
            "6.1",
            "`requires_grad = False` keeps the parameters of the layers before fc unchanged ('冻结前面的层')",
            bool(seed_way["max change, frozen weights"] == 0),
            f"measured on {measured_on}: the frozen parameters' max change "
            f"{seed_way['max change, frozen weights']:g}",
        ),
        Erratum(
            "6.1",
            "`requires_grad = False` freezes what the layers before fc compute (their BatchNorm statistics too)",
            not stats_move,
            f"measured on {measured_on}: under model.train() the 'frozen' BatchNorm layers still normalize with "
            f"batch statistics and overwrite their running statistics, changed by up to "
            f"{seed_way['max change, frozen BN running statistics']:.3g}; the eval-mode backbone features changed by "
            f"{100 * seed_way['relative change of eval-mode backbone features']:.1f}%",
            note=f"the mechanism is BatchNorm's, the same in the seed's ResNet-50; the sizes are this ResNet-18's. "
            f"Not necessarily worse: in the fine-tuning table the seed's way reached "
            f"{seed_way['held-out error (%)']:.1f}% held-out error against {kept['held-out error (%)']:.1f}% "
            "with BatchNorm kept in eval mode (a random backbone: mechanics, not a recipe comparison)",
        ),
    ]


def identity_reading(per_seed: pd.DataFrame) -> str:
    """What the identity runs show, read off them: where each variant starts and ends (medians over the seeds),
    and in how many seeds the residual stack ends closer to the identity than the plain one."""
    start, end = "relative MSE at start", f"relative MSE after {IDENTITY_STEPS} steps (train mode)"
    by = per_seed.groupby(["blocks", "variant"], sort=False)[[start, end]].median()
    depths = sorted(per_seed["blocks"].unique())
    seeds = per_seed["seed"].nunique()

    def at(column: str, variant: str) -> str:
        return ", ".join(f"{by.loc[(b, variant), column]:.4g} ({b} block{'s' if b > 1 else ''})" for b in depths)

    starts = per_seed.groupby("variant", sort=False)[start]
    exact = [v for v, values in starts if (values == 0).all()]
    worse = [v for v in ("plain", "residual") if (starts.get_group(v) > 1).all()]
    below = residual_below_plain(per_seed, IDENTITY_STEPS)
    return (
        f"Medians over {seeds} seed{'s' if seeds > 1 else ''}. At the start, "
        + (
            f"only the '{', '.join(exact)}' block{'s' if len(exact) > 1 else ''} computes the identity "
            "(relative MSE 0); "
            if exact
            else ""
        )
        + (f"the default-initialized {' and '.join(worse)} blocks are further from it than outputting zeros "
           f"(plain {at(start, 'plain')}; residual {at(start, 'residual')}). " if worse else "")
        + f"After {IDENTITY_STEPS} steps: plain {at(end, 'plain')}; residual {at(end, 'residual')}"
        + (f"; '{', '.join(exact)}' {at(end, exact[0])}" if exact else "")
        + ". The residual stack ends closer to the identity than the plain one in "
        + "; ".join(f"{o.residual_lower} of {o.seeds} seeds with {b} block{'s' if b > 1 else ''}"
                    for b, o in below.items())
        + "."
    )


def identity_errata(seed_numbers: dict, per_seed: pd.DataFrame) -> list[Erratum]:
    final = f"relative MSE after {IDENTITY_STEPS} steps (train mode)"
    by = per_seed.groupby(["blocks", "variant"])[final]
    below = residual_below_plain(per_seed, IDENTITY_STEPS)
    seeds = per_seed["seed"].nunique()
    # Residual lower in every seed at every depth: holds; plain lower in every seed at some depth: a consistent
    # counterexample; an order that changes from seed to seed (or a tie), or fewer than MIN_SEEDS seeds, decides
    # nothing.
    if seeds < MIN_SEEDS:
        easier: Outcome | bool = Outcome.UNDECIDED
    elif all(o.residual_lower == o.seeds for o in below.values()):
        easier = True
    elif any(o.plain_lower == o.seeds for o in below.values()):
        easier = False
    else:
        easier = Outcome.UNDECIDED
    return [
        Erratum(
            "2.1",
            "printing |H(x) - x| of an untrained plain block and residual block shows that the residual "
            "block learns identity more easily",
            False,
            f"untrained blocks, nothing learned: plain {seed_numbers['plain |H(x) - x|']:.3f}, residual "
            f"{seed_numbers['residual |H(x) - x|']:.3f}; both end in ReLU, floor "
            f"{seed_numbers['best any ReLU-ended block can do, mean |min(x, 0)|']:.3f} on N(0,1) input",
        ),
        Erratum(
            "2.1",
            "A residual block learns an identity mapping more easily than a plain block",
            easier,
            f"relative MSE after {IDENTITY_STEPS} Adam steps, median (min - max) over {seeds} seeds: "
            + "; ".join(
                f"{b} block(s) plain {_median_range(by.get_group((b, 'plain')))} vs residual "
                f"{_median_range(by.get_group((b, 'residual')))}, residual lower in {o.residual_lower} of "
                f"{o.seeds} seeds" for b, o in below.items()
            ),
            decide="" if easier is not Outcome.UNDECIDED else (
                f"at least {MIN_SEEDS} seeds that put the two blocks in one order at every depth (in these runs the "
                "order changed from seed to seed, or they tied, or there were fewer seeds)"),
        ),
    ]


def _median_range(values: pd.Series) -> str:
    return f"{values.median():.4f} ({values.min():.4f} - {values.max():.4f})"
