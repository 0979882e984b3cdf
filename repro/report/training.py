"""Training page: the degradation experiment (seed 2.1), a real identity test (2.1), fine-tuning (6.1).

Quick mode reads the degradation results that ``python -m repro.training.degradation`` wrote to
the directory ``--degradation DIR`` names (default ``reports/degradation/``, committed with the
command, commit, device and date that produced them, in ``degradation_meta.json``); without them
it runs a smoke-sized experiment and says that it proves nothing. ``--full`` runs the default
experiment itself (about 10 minutes on two CPU cores). The identity test and the fine-tuning comparison
run live in both modes (seconds).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pandas as pd
import torch

import reference
from repro.environment import cpu_threads
from repro.registry import MODELS, create_model
from repro.report.base import Erratum, Job, Options, Outcome, Page, Table, computed, findings, run_jobs
from repro.training import degradation
from repro.training.data import synthetic_shapes
from repro.training.finetune import (
    count_trainable,
    freeze_all_but,
    ported_model,
    replace_classifier,
    seed_freeze,
)
from repro.training.identity import identity_experiment, plot_identity, seed_identity_test
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


def _verdict_text(meta: dict, final: pd.DataFrame) -> str:
    v = meta["verdict"]
    depths = sorted(final["depth"].unique())
    shallow, deep = depths[0], depths[-1]
    err = final.set_index("model")["train error (%)"]
    lines = [
        f"Final training error: plain-{shallow} {err[f'plain{shallow}']:.1f}%, "
        f"plain-{deep} {err[f'plain{deep}']:.1f}%, "
        f"ResNet-{shallow} {err[f'resnet{shallow}']:.1f}%, ResNet-{deep} {err[f'resnet{deep}']:.1f}%.",
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


def identity_run(blocks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The identity test of ``blocks`` stacked blocks: (summary rows, curves). Each fit seeds itself,
    so the depths can run apart and be put together."""
    return identity_experiment(depths=(blocks,), steps=IDENTITY_STEPS)


def identity_results(runs: dict[int, tuple[pd.DataFrame, pd.DataFrame]]) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(the seed's test, summary of every depth, curves of every depth) from ``identity_run`` per depth."""
    with cpu_threads(1):
        seed_numbers = seed_identity_test()
    return (
        seed_numbers,
        pd.concat([runs[d][0] for d in IDENTITY_DEPTHS], ignore_index=True),
        pd.concat([runs[d][1] for d in IDENTITY_DEPTHS], ignore_index=True),
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


def finetune_run(label: str, iterations: int = 60, n_train: int = 3_000, n_test: int = 1_000) -> dict:
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

EXPERIMENTS = (*IDENTITY_DEPTHS, *FINETUNE_FREEZING)


def _experiment_seconds(name: int | str) -> float:
    """Rough one-core seconds, measured once (identity: 1.5 s per block; fine-tuning: 11 s); only orders the jobs."""
    return 1.5 * name if isinstance(name, int) else 11.0


@computed(seconds=_experiment_seconds)
def experiment(name: int | str) -> object:
    """One identity depth (an int) or one fine-tuning run (a FINETUNE_FREEZING label)."""
    with cpu_threads(1):  # tiny convolutions: one thread is as fast, and immune to busy cores
        return identity_run(name) if isinstance(name, int) else finetune_run(name)


def jobs(options: Options) -> list[Job]:
    return experiment.jobs(EXPERIMENTS) if _selected(options) else []


def experiments() -> tuple[tuple[dict, pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    """(identity_results(), the fine-tuning comparison: one row per way of freezing). Each run takes
    one thread; the ones not yet made run at once in worker processes where this process has more
    (the same numbers: each run seeds itself)."""
    run_jobs(experiment.jobs(EXPERIMENTS), desc="training experiments")
    return (
        identity_results({d: experiment(d) for d in IDENTITY_DEPTHS}),
        pd.DataFrame([experiment(label) for label in FINETUNE_FREEZING]),
    )


# --- the page --------------------------------------------------------------------------------------


def _selected(options: Options) -> bool:
    return any(n in MODELS for n in options.selected(CIFAR_NETS))


def build(options: Options) -> Page | None:
    if not _selected(options):
        return None
    curves, final, meta, provenance = degradation_results(options.full, options.degradation_dir)  # --full: all threads
    (seed_numbers, identity_summary, identity_curves), finetune = experiments()
    with cpu_threads(1):
        counts = seed_param_counts()
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
        "so the data need not be natural images; it must only be hard enough that a 20-layer net does not fit it at "
        "once, which the curves show it is not. It is smaller than CIFAR (16x16, 10k images) to fit 10 minutes on two "
        "CPU cores; with `--data` the same code runs CIFAR-10 at 32x32 for the paper's 64k iterations. "
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
        f"{IDENTITY_STEPS} steps) to output their input. Relative MSE = MSE / mean(x^2): 1 is no better than "
        "outputting zeros. A residual block starts near the identity and gets there fast; a plain block must build "
        "it from conv-BN-ReLU-conv-BN-ReLU, and a stack of eight plain blocks barely improves: the degradation "
        "problem in miniature. With gamma 0 the residual block is the identity from step 0 and stays there."
    )
    counts_note = (
        "Seed 6.1 replaces ResNet-50's fc with a 10-class layer and freezes every parameter whose name lacks 'fc': "
        "2048 x 10 + 10 = 20,490 trainable parameters, as the seed states. Its substring test is fragile: on an "
        "SE-ResNet ('se.fc1', 'se.fc2') it leaves every squeeze-excitation layer trainable; matching module paths "
        "(`freeze_all_but`) does not."
    )
    finetune_note = (
        f"A short head-only fine-tuning run of `{FINETUNE_SPEC}` ported into the hand-written ResNet-18 (random "
        "weights: no pretrained file was given, so only the mechanics are measured here; "
        "`python -m repro.training.finetune --weights PATH` fine-tunes real weights) on generated data at 32x32, "
        "60 iterations of batch 64, the same batches both times. Frozen the seed's way, model.train() still "
        "normalizes with batch statistics and overwrites every running mean and variance of the 'frozen' backbone, "
        "so its eval-mode features change; with frozen BatchNorm kept in eval mode (seed pitfall 3 applied to "
        "fine-tuning) the backbone is bit-for-bit what was loaded. Letting the statistics adapt can help (here, on a "
        "random backbone, it "
        + ("lowered" if finetune["held-out error (%)"].iloc[0] < finetune["held-out error (%)"].iloc[1]
           else "did not lower")
        + " "
        "the held-out error); it is a choice to make knowingly, and not what freezing means."
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
    errata = identity_errata(seed_numbers, identity_summary) + finetune_errata(finetune) + [batchnorm_modes_erratum()]
    if not provenance.startswith("a SMOKE RUN"):
        errata += degradation_errata(curves, final, meta)
    lead = (
        ""
        if provenance.startswith("a SMOKE RUN")
        else f"degradation runs: {meta['recipe']['iterations']} iterations, "
        f"{len(meta.get('seeds', [meta['recipe'].get('seed', 0)]))} seed(s), "
        + (
            "trained to a plateau"
            if all(m < PLATEAU_POINTS for m in plateaued(curves).values())
            else "not trained to a plateau"
        )
    )
    opening = findings(errata, lead) + "\n\n"
    return Page("training", title, opening + intro, tables, images, errata)


PLATEAU_POINTS = 1.0  # a net has plateaued when the last tenth of its run moved its training error by less than this
MIN_SEEDS = 3


def plateaued(curves: pd.DataFrame) -> dict[str, float]:
    """Per net, how many points of training error (%) the last tenth of the run changed it by."""
    out = {}
    for model, curve in curves.sort_values("iteration").groupby("model"):
        last = curve["iteration"].max()
        before = curve[curve["iteration"] <= 0.9 * last]
        start = before.iloc[-1] if len(before) else curve.iloc[0]
        out[model] = abs(100 * (curve.iloc[-1]["train_error"] - start["train_error"]))
    return out


def degradation_errata(curves: pd.DataFrame, final: pd.DataFrame, meta: dict) -> list[Erratum]:
    """The degradation claims, decided only by runs trained to a plateau over at least MIN_SEEDS seeds."""
    v = meta["verdict"]
    err = final.set_index("model")["train error (%)"]
    d = sorted(final["depth"].unique())
    moves = plateaued(curves)
    seeds = len(meta.get("seeds", [meta["recipe"].get("seed", 0)]))
    flat = all(m < PLATEAU_POINTS for m in moves.values())
    run = (
        f"{meta['data']}, {meta['recipe']['iterations']} iterations, {seeds} seed(s); in the last tenth of the run the "
        "training error moved " + ", ".join(f"{k} {m:.1f}" for k, m in moves.items())
        + f" points ({'all' if flat else 'not all'} under the {PLATEAU_POINTS:g}-point plateau rule)"
    )
    decide = (
        f"runs trained to a plateau (the last tenth of training moves training error by under {PLATEAU_POINTS:g} "
        f"point) over at least {MIN_SEEDS} seeds, e.g. `python -m repro.training.degradation --data "
        "cifar-10-batches-py --iterations 64000 --seed S` for three seeds (the paper's budget; a GPU). "
        f"`python -m repro.report --full` re-runs the default one-seed, {degradation.DEFAULT_ITERATIONS}-iteration "
        "experiment, which does not"
    )
    decided = flat and seeds >= MIN_SEEDS
    resnet = (
        f"training error: ResNet-{d[0]} {err[f'resnet{d[0]}']:.1f}%, ResNet-{d[-1]} {err[f'resnet{d[-1]}']:.1f}% "
        f"(plain-{d[-1]} {err[f'plain{d[-1]}']:.1f}%); {run}"
    )
    return [
        Erratum(
            "2.1",
            "A deeper plain network has higher training error than a shallower one (degradation)",
            Outcome.of(v["plain_degrades"]),
            f"training error: plain-{d[0]} {err[f'plain{d[0]}']:.1f}%, "
            f"plain-{d[-1]} {err[f'plain{d[-1]}']:.1f}%; {run}",
            note="shown at this budget, as the paper's Figure 1 shows it throughout training; "
            + ("plateaued runs over enough seeds" if decided else
               ("not over " if flat else "not at a plateau nor over ") + f"{MIN_SEEDS} seeds: the caveat below"),
        ),
        Erratum(
            "2.1",
            "Residual connections solve it: the deeper ResNet trains no worse than the shallower one",
            Outcome.of(not v["resnet_degrades"]) if decided else Outcome.UNDECIDED,
            resnet,
            decide="" if decided else decide,
            note="at this budget the shortcuts close part of the gap"
            if v["resnet_beats_plain_at_depth"] and not decided
            else "",
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


def finetune_errata(finetune: pd.DataFrame) -> list[Erratum]:
    """Seed 6.1's count and its freezing, read off the fine-tuning tables."""
    counts = count_trainable(repro_resnet50_ten_classes())
    seed_way, kept = finetune.iloc[0], finetune.iloc[1]
    stats_move = seed_way["max change, frozen BN running statistics"] > 0
    return [
        Erratum(
            "6.1",
            "ResNet-50 with a 10-class fc and all else frozen has 20,490 trainable parameters",
            counts.trainable == 20_490,
            f"{counts.trainable:,} trainable, {counts.frozen:,} frozen ({100 * counts.trainable / counts.total:.2f}%)",
        ),
        Erratum(
            "6.1",
            "`requires_grad = False` freezes the layers before fc ('冻结前面的层')",
            Outcome.PARTLY if stats_move else Outcome.HOLDS,
            f"the parameters stay frozen (max change {seed_way['max change, frozen weights']:g}); the BatchNorm "
            f"running statistics do not: fine-tuning under model.train() changed them by up to "
            f"{seed_way['max change, frozen BN running statistics']:.3g} and the eval-mode backbone features by "
            f"{100 * seed_way['relative change of eval-mode backbone features']:.1f}%",
            note=f"not necessarily worse: in the fine-tuning table the seed's recipe reached "
            f"{seed_way['held-out error (%)']:.1f}% held-out error against {kept['held-out error (%)']:.1f}% "
            "with BatchNorm kept in eval mode (a random backbone, 60 iterations: mechanics, not a recipe "
            "comparison)",
        ),
    ]


def identity_errata(seed_numbers: dict, identity_summary: pd.DataFrame) -> list[Erratum]:
    steps_col = f"relative MSE after {IDENTITY_STEPS} steps (train mode)"
    by = identity_summary.set_index(["blocks", "variant"])[steps_col]
    easier = all(by[(b, "residual")] < by[(b, "plain")] for b in IDENTITY_DEPTHS)
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
            f"relative MSE after {IDENTITY_STEPS} Adam steps: "
            + "; ".join(
                f"{b} block(s) plain {by[(b, 'plain')]:.4f} vs residual {by[(b, 'residual')]:.4f}"
                for b in IDENTITY_DEPTHS
            ),
        ),
    ]
