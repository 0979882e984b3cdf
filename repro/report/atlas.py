"""The ecosystem atlas: every torchvision classification model that timm also ships, verified against it
with ``repro.verify``, and the Hugging Face ``transformers`` vision CNNs against timm.

Pairs come from the libraries:

* **timm's torchvision tags.** ``timm.list_pretrained("*.tv*")`` names every timm model that loads
  torchvision's weights. Its pretrained config's ``url`` is one of torchvision's own weight URLs
  (``torchvision.models.get_model_weights(name)``): that names the torchvision model. Configs without
  a URL (weights re-hosted on the hub) name it by the timm architecture, which torchvision also has.
* **Name matches** for the other torchvision models, by ``normalized_names`` (stated there); of several,
  those with torchvision's parameter count, or the closest (counted on the meta device).
* The torchvision models with no timm counterpart are listed.
* **transformers**: ``HF_PAIRS``, each a config of the Hugging Face model set to match a timm model
  where a config option exists. A Hugging Face model returns an output object: ``repro.verify`` compares
  its ``logits``.

Every pair runs in a worker process (``run_pairs``) with a per-pair timeout; an error, a timeout or a
dead worker is recorded in that pair's row and never stops the others. Results are one JSON
(``reports/atlas.json``), committed; the report's quick mode reads it, ``--full`` re-runs every pair.
From a shell: ``python -m repro.report --pages atlas --full`` (``--atlas-pairs``, ``--atlas-workers``,
``--atlas-timeout``, ``--atlas-max-params`` set the run).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import json
import multiprocessing
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import timm
import torch
import torchvision
from timm.models import get_pretrained_cfg
from torch import nn

import reference
import repro
from repro.environment import environment
from repro.flops import build_on_meta_or_none
from repro.report.base import (
    ATLAS_MAX_PARAMS, ATLAS_TIMEOUT_S, Options, Page, ReportError, Table, built_from, read_results,
)

RESOLUTIONS = (64, 128)  # tried in order before a model's native resolution: the smallest both models run at
BATCH = 2  # the train step's BatchNorm needs two samples
# Verifying a model holds about 64 bytes per parameter at its peak (VGG-16-BN, 138M parameters: 8.9 GB, measured
# with /usr/bin/time), so the workers together take on at most this many candidate parameters at once (a pair
# larger than that runs alone): two VGGs side by side would need most of this machine's 23 GB.
MEMORY_PARAMS = 250_000_000
RESULTS_FORMAT = 2  # atlas.json's layout; 2: verify's report with its levels (format 1 had none)
NUMBER = (int, float)
# What the page reads from atlas.json besides its records.
RESULTS_FIELDS = {"environment": (dict,), "transformers": (str,), "workers": (int,), "timeout_s": NUMBER,
                  "max_params": (int,), "discovery_seconds": NUMBER, "seconds": NUMBER,
                  "without_counterpart": (list,)}
RERUN = "python -m repro.report --pages atlas --full"
QUICK_SUBSET = ("torchvision:resnet18", "transformers:resnet18")  # quick mode without committed results


# -- pairs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """One verification: ``candidate`` (built with ``candidate_kwargs``) against ``reference``."""

    table: str  # "torchvision" or "transformers"
    candidate: str  # "torchvision:resnet50" or "transformers:resnet50" (a key of HF_PAIRS)
    reference: str  # "timm:resnet50"
    how: str  # how the pair was found, in words
    timm_tags: tuple[str, ...] = ()  # the timm pretrained tags that load this torchvision model's weights
    candidate_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return self.candidate.split(":", 1)[1]


def _torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def _weight_urls() -> dict[str, str]:
    """Every torchvision classification checkpoint URL -> the torchvision model it belongs to."""
    urls = {}
    for name in _torchvision_names():
        for weights in torchvision.models.get_model_weights(name):
            urls[weights.url] = name
    return urls


def tv_tagged_pairs() -> list[Pair]:
    """timm's torchvision-weight tags, grouped by architecture: one pair per (torchvision, timm) model."""
    urls, tv_names = _weight_urls(), set(_torchvision_names())
    found: dict[tuple[str, str], list[str]] = {}
    how: dict[tuple[str, str], str] = {}
    for tagged in timm.list_pretrained("*.tv*"):
        arch, tag = tagged.split(".", 1)
        cfg = get_pretrained_cfg(tagged)
        if cfg.url in urls:
            tv, why = urls[cfg.url], f"timm tag .{tag}: its url is torchvision's checkpoint"
        elif arch in tv_names:
            tv, why = arch, f"timm tag .{tag} ({cfg.hf_hub_id}): torchvision's model of that name"
        else:
            raise LookupError(f"timm's {tagged} names no torchvision model (url {cfg.url!r})")
        found.setdefault((tv, arch), []).append(tag)
        how.setdefault((tv, arch), why)
    return [Pair("torchvision", f"torchvision:{tv}", f"timm:{arch}", how[(tv, arch)], tuple(tags))
            for (tv, arch), tags in sorted(found.items())]


_SIZES = {"t": "tiny", "s": "small", "b": "base", "l": "large", "h": "huge"}
# What may follow a normalized name in a timm name: patch size, window, TF port, resolution.
_TIMM_SUFFIX = re.compile(r"(_patch\d+)?(_window\d+)?(_tf)?(_\d{3})?")


def normalized_names(tv_name: str) -> list[str]:
    """The timm names a torchvision name normalizes to, most specific first. The rule:

    * ``_vN`` joins its stem (``mobilenet_v2`` -> ``mobilenetv2``, ``swin_v2_t`` -> ``swinv2_t``);
    * a one-letter size is spelled out (``t s b l h`` -> ``tiny small base large huge``), or kept
      (``efficientnetv2_s``), and a number after it is the patch size (``vit_b_16`` -> ``vit_base_patch16``);
    * a width multiplier ``A_B`` is timm's ``_ABB`` in hundredths (``mnasnet1_0`` -> ``mnasnet_100``,
      ``mnasnet0_75`` -> ``mnasnet_075``); a name with none also tries timm's default width ``_100``;
    * RegNet's ``x_400mf`` / ``y_1_6gf`` is timm's GFLOPs x10 in three digits (``regnetx_004``, ``regnety_016``);
    * timm's TensorFlow port ``tf_<name>`` is a candidate too.
    """
    name = re.sub(r"_v(\d)", r"v\1", tv_name)
    regnet = re.fullmatch(r"regnet_([xy])_(\d+(?:_\d+)?)(mf|gf)", name)
    if regnet:
        kind, value, unit = regnet.groups()
        gflops = float(value.replace("_", ".")) / (1000 if unit == "mf" else 1)
        return [f"regnet{kind}_{round(gflops * 10):03d}"]
    width = re.fullmatch(r"(.*?)(\d)_(\d{1,2})", name)
    if width:
        stem, whole, hundredths = width.groups()
        return [n for base in (f"{stem.rstrip('_')}_{whole}{hundredths:0<2}",) for n in (base, f"tf_{base}")]
    names = []
    for spell in (True, False):
        parts, out, i = name.split("_"), [], 0
        while i < len(parts):
            part = parts[i]
            if part in _SIZES:
                out.append(_SIZES[part] if spell else part)
                if i + 1 < len(parts) and parts[i + 1].isdigit():
                    out.append(f"patch{parts[i + 1]}")
                    i += 1
            else:
                out.append(part)
            i += 1
        names += [n for n in ("_".join(out), "_".join(out) + "_100") if n not in names]
    return [n for base in names for n in (base, f"tf_{base}")]


def _param_count(build: Callable[[], nn.Module]) -> int:
    return sum(p.numel() for p in _for_inspection(build).parameters())


def name_matched_pairs(exclude: set[str]) -> tuple[list[Pair], list[str]]:
    """Pairs for the torchvision models not in ``exclude`` by ``normalized_names``, and the models with none.

    A normalized name matches a timm name equal to it or extended by ``_TIMM_SUFFIX`` (patch size,
    window, resolution); of several, those with torchvision's parameter count are kept, or when none
    has it those with the closest count (the verification then shows where they differ)."""
    timm_names = timm.list_models()
    pairs, alone = [], []
    for tv in _torchvision_names():
        if tv in exclude:
            continue
        candidates = []
        for base in normalized_names(tv):
            candidates += [n for n in timm_names
                           if n.startswith(base) and _TIMM_SUFFIX.fullmatch(n[len(base):]) and n not in candidates]
        if not candidates:
            alone.append(tv)
            continue
        same = candidates
        if len(candidates) > 1:
            tv_count = _param_count(lambda: torchvision.models.get_model(tv, weights=None))
            gaps = {n: abs(_param_count(lambda n=n: timm.create_model(n)) - tv_count) for n in candidates}
            same = [n for n in candidates if gaps[n] == min(gaps.values())]
        rule = "name rule"
        if len(candidates) > 1:
            rule += (f" ({len(same)} of {len(candidates)} with its parameter count)" if gaps[same[0]] == 0
                     else f" ({len(same)} of {len(candidates)} with the closest parameter count, "
                          f"{gaps[same[0]]:,} apart)")
        pairs += [Pair("torchvision", f"torchvision:{tv}", f"timm:{n}", rule) for n in same]
    return pairs, alone


@dataclass(frozen=True)
class HFPair:
    """A transformers model class, its config set to match ``reference`` where an option exists."""

    model_class: str  # in transformers
    config_class: str
    reference: str
    config: tuple[tuple[str, Any], ...] = ()
    note: str = ""


NO_DROPOUT = "dropout off, as in timm's default"
HF_PAIRS: dict[str, HFPair] = {
    "resnet18": HFPair("ResNetForImageClassification", "ResNetConfig", "timm:resnet18",
                       (("layer_type", "basic"), ("depths", [2, 2, 2, 2]), ("hidden_sizes", [64, 128, 256, 512]))),
    "resnet50": HFPair("ResNetForImageClassification", "ResNetConfig", "timm:resnet50"),
    "convnext_tiny": HFPair("ConvNextForImageClassification", "ConvNextConfig", "timm:convnext_tiny",
                            (("layer_norm_eps", 1e-6),), "final LayerNorm eps 1e-6 (timm's)"),
    "regnety_040": HFPair("RegNetForImageClassification", "RegNetConfig", "timm:regnety_040"),
    "mobilenetv1_100": HFPair("MobileNetV1ForImageClassification", "MobileNetV1Config", "timm:mobilenetv1_100",
                              (("tf_padding", False), ("layer_norm_eps", 1e-5), ("classifier_dropout_prob", 0.0)),
                              f"symmetric padding, BN eps 1e-5, {NO_DROPOUT}"),
    "mobilenetv2_100": HFPair("MobileNetV2ForImageClassification", "MobileNetV2Config", "timm:mobilenetv2_100",
                              (("tf_padding", False), ("layer_norm_eps", 1e-5), ("classifier_dropout_prob", 0.0)),
                              f"symmetric padding, BN eps 1e-5, {NO_DROPOUT}"),
    "tf_efficientnet_b0": HFPair("EfficientNetForImageClassification", "EfficientNetConfig",
                                 "timm:tf_efficientnet_b0",
                                 (("width_coefficient", 1.0), ("depth_coefficient", 1.0), ("image_size", 224),
                                  ("hidden_dim", 1280), ("dropout_rate", 0.0), ("drop_connect_rate", 0.0),
                                  ("batch_norm_momentum", 0.1)),
                                 f"B0 width, depth and head width, {NO_DROPOUT} and drop-path off, BN momentum 0.1 "
                                 "(the default 0.99 is TensorFlow's decay, which torch's BatchNorm takes as its "
                                 "momentum: running statistics 99% replaced each step)"),
}


def hf_pairs() -> list[Pair]:
    return [Pair("transformers", f"transformers:{name}", p.reference,
                 "configured to match" + (f": {p.note}" if p.note else " (the config's defaults)"),
                 candidate_kwargs=(("num_labels", 1000),) + p.config)  # timm's ImageNet head
            for name, p in HF_PAIRS.items()]


@dataclass
class Discovery:
    pairs: list[Pair]
    without_counterpart: list[str]
    seconds: float


def discover() -> Discovery:
    start = time.perf_counter()
    tagged = tv_tagged_pairs()
    named, alone = name_matched_pairs({p.name for p in tagged})
    return Discovery(tagged + named + hf_pairs(), alone, time.perf_counter() - start)


# -- one pair, in a worker ----------------------------------------------------------------------
def _init_parameters(cls: type) -> set[str]:
    return set(inspect.signature(cls.__init__).parameters)


def _build_candidate(pair: Pair, image_size: int | None) -> nn.Module:
    kwargs = dict(pair.candidate_kwargs)
    if pair.table == "transformers":
        import transformers

        spec = HF_PAIRS[pair.name]
        config = getattr(transformers, spec.config_class)(**kwargs)
        return getattr(transformers, spec.model_class)(config)  # verify compares its output object's .logits
    if image_size is not None:
        kwargs["image_size"] = image_size
    return torchvision.models.get_model(pair.name, weights=None, **kwargs)


def _for_inspection(build: Callable[[], nn.Module]) -> nn.Module:
    """The model's structure, cheaply: built on the meta device, or normally where its constructor
    computes with tensors (torchvision's RegNets derive their widths with ``torch`` operations)."""
    model = build_on_meta_or_none(build)
    return build() if model is None else model


def _matching_options(pair: Pair, tv: nn.Module) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Options that make the two models comparable, read from the torchvision model ``tv``: its own
    (``aux_logits=False`` where it has an auxiliary head timm lacks) and timm's (none); whether both take
    an image size (then built at the reduced resolution). Dropout and drop-path stay at each library's
    defaults: where those differ, verify's stochastic-configuration level says how."""
    if pair.table != "torchvision":
        return {}, {}, False
    params = _init_parameters(type(tv))
    candidate = {"aux_logits": False} if "aux_logits" in params and getattr(tv, "aux_logits", False) else {}
    return candidate, {}, "image_size" in params


def _native(reference_spec: str) -> int:
    return int(get_pretrained_cfg(reference_spec.split(":", 1)[1]).input_size[-1])


def _runs(model: nn.Module, size: int) -> bool:
    """Whether the model runs on a ``size`` x ``size`` input (eval, one sample): how a resolution is chosen."""
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except (RuntimeError, ValueError, AssertionError, IndexError):  # what a too-small input raises
        return False
    return True


def candidate_params(pair: Pair) -> int:
    """The candidate's parameter count, from a build on the meta device where its constructor allows."""
    return sum(p.numel() for p in _for_inspection(lambda: _build_candidate(pair, None)).parameters())


# What building a model that cannot be built raises (an unknown name, an option it does not take, ...).
_BUILD_FAILURES = (KeyError, ValueError, TypeError, RuntimeError, ImportError, AttributeError, NotImplementedError)


def _counted(pair: Pair) -> int | None:
    """``candidate_params``, or ``None`` where the candidate cannot be built: its worker then raises the same
    error, which becomes that pair's row."""
    try:
        return candidate_params(pair)
    except _BUILD_FAILURES:
        return None


def verify_pair(pair: Pair, max_params: int = ATLAS_MAX_PARAMS, count: int | None = None) -> dict[str, Any]:
    """Verify one pair (its candidate has ``count`` parameters, counted here if not given) and return its
    record. Raises what the build or ``repro.verify`` raises."""
    start = time.perf_counter()
    count = candidate_params(pair) if count is None else count
    if count > max_params:
        return {"outcome": "not run", "seconds": round(time.perf_counter() - start, 1),
                "error": f"{count:,} parameters, over this run's limit of {max_params:,} (memory); "
                         f"decided by a run with a higher limit (--atlas-max-params) on a machine with more memory"}
    candidate_kwargs, reference_kwargs, sized = _matching_options(pair, _for_inspection(
        lambda: _build_candidate(pair, None)))
    pair = dataclasses.replace(pair, candidate_kwargs=pair.candidate_kwargs + tuple(candidate_kwargs.items()))
    size, candidate, ref = None, None, None
    for s in RESOLUTIONS + (_native(pair.reference),):
        if candidate is None or sized:  # a model built for one image size is rebuilt for the next
            candidate = _build_candidate(pair, s if sized else None)
            ref = reference.create(pair.reference, **reference_kwargs, **({"img_size": s} if sized else {}))
        if _runs(candidate, s) and _runs(ref, s):
            size = s
            break
    if size is None:
        raise ValueError(f"no input size runs on both models (tried {RESOLUTIONS} and the native size)")
    if sized:
        reference_kwargs["img_size"] = size
    record: dict[str, Any] = {
        "outcome": "ran",
        "candidate_kwargs": dict(pair.candidate_kwargs) | ({"image_size": size} if sized else {}),
        "reference_kwargs": reference_kwargs,
        "input_size": [BATCH, 3, size, size],
    }
    del ref
    report = repro.verify(candidate, pair.reference, input_size=(BATCH, 3, size, size),
                          reference_kwargs=reference_kwargs)
    result = report.to_dict()
    result.pop("layers", None)
    record["report"] = result
    record["ported"] = len(report.port.pairs) if report.port is not None else None
    record["reshaped"] = len(report.port.transformed) if report.port is not None else None
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def _worker(conn) -> None:
    """Verify the pairs sent over ``conn`` one at a time; answer each with its record or its error."""
    torch.set_num_threads(1)
    while (task := conn.recv()) is not None:
        pair, max_params, count = task
        start = time.perf_counter()
        try:
            answer = verify_pair(pair, max_params, count)
        # The boundary between pairs: whatever one pair raises is that pair's result, recorded with
        # its type and message (and where it was raised), so that the other pairs still run.
        except Exception as err:  # noqa: BLE001
            frames = traceback.extract_tb(err.__traceback__)
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
            answer = {"outcome": "error", "error": f"{type(err).__name__}: {err}"[:2000], "raised_at": where,
                      "seconds": round(time.perf_counter() - start, 1)}
        conn.send(answer)


@dataclass
class _Slot:
    process: Any
    conn: Any
    index: int | None = None
    started: float = 0.0


def next_pair(todo: list[int], busy: list[int], load: list[int], memory_params: int) -> int | None:
    """The first pair of ``todo`` that fits beside the ``busy`` ones (their ``load`` together at most
    ``memory_params``); with none busy, the first pair, however large; ``None``: wait."""
    held = sum(load[i] for i in busy)
    return next((i for i in todo if not busy or held + load[i] <= memory_params), None)


def run_pairs(pairs: list[Pair], workers: int = 2, timeout_s: float = ATLAS_TIMEOUT_S,
              max_params: int = ATLAS_MAX_PARAMS, progress: Callable[[str], None] | None = None,
              memory_params: int = MEMORY_PARAMS) -> list[dict[str, Any]]:
    """Every pair's record, each verified in a worker process (spawned; one thread each), in order, as long as
    the candidates being verified hold at most ``memory_params`` parameters together (a larger pair waits until it
    can run alone). A pair that runs past ``timeout_s`` or kills its worker is recorded as such and its worker
    replaced."""
    context = multiprocessing.get_context("spawn")
    results: list[dict[str, Any] | None] = [None] * len(pairs)
    counts = [_counted(p) for p in pairs]
    # A pair over max_params is not run, and one that cannot be built fails at once: neither holds memory.
    load = [c if c is not None and c <= max_params else 0 for c in counts]
    todo = list(range(len(pairs)))

    def start_worker() -> _Slot:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(child,), daemon=True)
        process.start()
        child.close()
        return _Slot(process, parent)

    slots = [start_worker() for _ in range(max(1, min(workers, len(pairs))))]

    def finish(slot: _Slot, answer: dict[str, Any]) -> None:
        results[slot.index] = answer
        if progress:
            progress(f"{pairs[slot.index].candidate} vs {pairs[slot.index].reference}: {answer['outcome']} "
                     f"({answer.get('seconds', 0):.0f} s)")
        slot.index = None

    try:
        while todo or any(s.index is not None for s in slots):
            for slot in slots:
                busy = [s.index for s in slots if s.index is not None]
                if slot.index is None and (index := next_pair(todo, busy, load, memory_params)) is not None:
                    todo.remove(index)
                    slot.index, slot.started = index, time.perf_counter()
                    slot.conn.send((pairs[index], max_params, counts[index]))
            wait([s.conn for s in slots if s.index is not None], timeout=1.0)
            for i, slot in enumerate(slots):
                if slot.index is None:
                    continue
                elapsed = time.perf_counter() - slot.started
                if slot.conn.poll():
                    try:
                        finish(slot, slot.conn.recv())
                        continue
                    except EOFError:  # the worker died mid-pair
                        pass
                if not slot.process.is_alive() or elapsed > timeout_s:
                    alive = slot.process.is_alive()
                    slot.process.kill()
                    slot.process.join()
                    outcome = ({"outcome": "timeout", "error": f"no result within {timeout_s:.0f} s"} if alive else
                               {"outcome": "crashed", "error": f"the worker died (exit code {slot.process.exitcode})"})
                    finish(slot, {**outcome, "seconds": round(elapsed, 1)})
                    slots[i] = start_worker()
    finally:
        for slot in slots:
            if slot.process.is_alive():
                if slot.index is None:
                    slot.conn.send(None)
                else:
                    slot.process.kill()
                slot.process.join(timeout=10)
                if slot.process.is_alive():
                    slot.process.kill()
    return [{**dataclasses.asdict(p), "candidate_kwargs": dict(p.candidate_kwargs), **r}
            for p, r in zip(pairs, results, strict=True)]


def run_atlas(patterns: tuple[str, ...] = ("*",), workers: int = 2, timeout_s: float = ATLAS_TIMEOUT_S,
              max_params: int = ATLAS_MAX_PARAMS, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Discover the pairs, verify those whose candidate matches one of ``patterns`` (fnmatch), return the results."""
    start = time.perf_counter()
    commit = _repro_commit()  # the code that runs: taken before, not after a run that may take minutes
    found = discover()
    pairs = [p for p in found.pairs if any(fnmatch.fnmatchcase(p.candidate, pattern) for pattern in patterns)]
    if not pairs:
        raise ReportError(f"--atlas-pairs {' '.join(patterns)}: no pair's candidate matches (candidates such as "
                          f"{', '.join(p.candidate for p in found.pairs[:3])})")
    records = run_pairs(pairs, workers, timeout_s, max_params, progress)
    return {
        "format": RESULTS_FORMAT,
        "environment": environment(),
        "repro_commit": commit,
        "transformers": _transformers_version(),
        "patterns": list(patterns),
        "workers": workers,
        "timeout_s": timeout_s,
        "max_params": max_params,
        "memory_params": MEMORY_PARAMS,
        "discovery_seconds": round(found.seconds, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "without_counterpart": found.without_counterpart,
        "pairs": records,
    }


def _repro_commit() -> str | None:
    """The commit of this checkout the atlas ran on (None outside a git checkout)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# -- the page -----------------------------------------------------------------------------------
SAME_FUNCTION = "same function, stochastic configuration differs"
TRAIN_UNDECIDED = "eval equivalent, train step undecided"
OUTCOMES = ("bit-identical", "equivalent", SAME_FUNCTION, TRAIN_UNDECIDED, "eval equivalent, train step differs",
            "not equivalent", "structures differ", "tool error", "timeout", "crashed", "not run")
SAME_EVAL = ("bit-identical", "equivalent", SAME_FUNCTION, TRAIN_UNDECIDED, "eval equivalent, train step differs")


def levels(record: dict[str, Any]) -> dict[str, str]:
    """The verdict per level (eval, train step, stochastic configuration), as verify states it."""
    return {name: level["state"] for name, level in record["report"]["levels"].items()}


def outcome(record: dict[str, Any]) -> str:
    if record["outcome"] == "error":
        return "tool error"
    if record["outcome"] != "ran":
        return record["outcome"]
    report = record["report"]
    if report["bit_exact"]:
        return "bit-identical"
    if report["equivalent"]:
        return "equivalent"
    if report.get("verdict") == "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION":
        return SAME_FUNCTION
    if report.get("verdict", "").startswith("SAME EVAL FUNCTION, TRAIN STEP UNDECIDED"):
        return TRAIN_UNDECIDED
    by_level = levels(record)
    if "structure" in by_level or report["structure"] or any(report["unpaired"].values()):
        return "structures differ"
    if by_level.get("eval") in ("bit-identical", "equivalent"):
        return "eval equivalent, train step differs"
    return "not equivalent"


CAUSE_CHARS = 400  # a table cell; the JSON keeps everything


def _cell(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= CAUSE_CHARS else text[:CAUSE_CHARS - 3] + "..."


def cause(record: dict[str, Any]) -> str:
    """The first divergence's cause in words: verify's own detail, or the error, where it was raised."""
    if record["outcome"] != "ran":
        where = f" (raised at {record['raised_at']})" if record.get("raised_at") else ""
        return _cell(f"{record.get('error', '')}{where}")
    report = record["report"]
    words = [report["divergence_detail"]] if report["divergence_detail"] else [
        f"{name}: {level['detail']}" for name, level in report["levels"].items() if level["state"] == "undecided"
        and name != "stochastic configuration"]  # a train step that cannot be decided says why
    unpaired = report["unpaired"]
    words += [f"{len(unpaired[side])} {side} tensors unpaired, e.g. {unpaired[side][0]}"
              for side in ("candidate", "reference") if unpaired[side]]
    return _cell("; ".join(words))


def _options(record: dict[str, Any]) -> str:
    """What was passed to build the pair: torchvision's options, a transformers config's settings (its
    ImageNet head, ``num_labels=1000``, left out), timm's options."""
    prefix = "config " if record["table"] == "transformers" else ""
    parts = [f"{prefix}{k}={v}" for k, v in record.get("candidate_kwargs", {}).items() if k != "num_labels"]
    parts += [f"timm {k}={v}" for k, v in record.get("reference_kwargs", {}).items()]
    return ", ".join(parts)


def _rows(records: list[dict[str, Any]], table: str) -> pd.DataFrame:
    rows = []
    for r in (r for r in records if r["table"] == table):
        report = r.get("report", {})
        by_level = levels(r) if r["outcome"] == "ran" else {}
        rows.append({
            table: r["candidate"].split(":", 1)[1],
            "timm": r["reference"].split(":", 1)[1],
            "paired by": r["how"] + (f" [{', '.join(r['timm_tags'])}]" if r["timm_tags"] else ""),
            "input": "x".join(map(str, r.get("input_size", []))),
            "options": _options(r),
            "outcome": outcome(r),
            "levels": ", ".join(f"{k}: {v}" for k, v in by_level.items()),
            "first divergence": report.get("first_divergence") or "",
            "cause": cause(r),
            "tensors ported": r.get("ported"),
            "seconds": r.get("seconds"),
        })
    return pd.DataFrame(rows)


def _page_columns(table: str) -> tuple[str, ...]:
    return (table, "timm", "input", "options", "outcome", "levels", "first divergence", "cause", "tensors ported")


def build_page(results: dict[str, Any], source: str) -> Page:
    records = results["pairs"]
    counts = pd.Series([outcome(r) for r in records]).value_counts()
    summary = pd.DataFrame({"outcome": [o for o in OUTCOMES if o in counts],
                            "pairs": [int(counts[o]) for o in OUTCOMES if o in counts]})
    env = results["environment"]
    tv = [r for r in records if r["table"] == "torchvision" and r.get("timm_tags")]
    tv_outcomes = pd.Series([outcome(r) for r in tv]).value_counts()
    tv_same = sum(int(tv_outcomes.get(o, 0)) for o in SAME_EVAL)
    def named(rows: list[dict[str, Any]]) -> str:
        return ", ".join(f"{r['candidate'].split(':', 1)[1]} ({outcome(r)})" for r in rows)

    tv_differ = [r for r in tv if outcome(r) in ("not equivalent", "structures differ")]
    tv_open = [r for r in tv if outcome(r) not in SAME_EVAL and r not in tv_differ]
    findings = (f"Findings: of {len(records)} pairs, " + ", ".join(f"{n} {o}" for o, n in zip(summary["outcome"],
                summary["pairs"])) + f". Of the {len(tv)} pairs timm tags as loading torchvision's weights, {tv_same} "
                f"compute the same function in eval (" + ", ".join(f"{int(tv_outcomes[o])} {o}" for o in SAME_EVAL
                                                                  if o in tv_outcomes) + ")"
                + (f"; not the same function in eval: {named(tv_differ)}" if tv_differ else "")
                + (f"; not decided in this run (re-run them alone: `--pairs`): {named(tv_open)}" if tv_open else "")
                + ".")
    intro = f"""{findings}

Every torchvision classification model that timm also ships, verified against it with
`repro.verify(torchvision_model, "timm:<name>", input_size=...)` at reduced resolution (the smallest of
{", ".join(map(str, RESOLUTIONS))} px that both models run at, else timm's native size), random init, no downloads;
then the Hugging Face `transformers` vision CNNs against timm. {source}

How pairs are found (`repro/report/atlas.py`): timm's `*.tv*` pretrained tags name the torchvision
checkpoint they load (its `url` is one of torchvision's weight URLs, or the weights are re-hosted under the
architecture's own name); the other torchvision models are matched by a stated name rule
(`normalized_names`); of several matches, those with torchvision's parameter count (or the closest).
Options passed to match the models are in
`options` (`aux_logits=False` where torchvision has an auxiliary head timm lacks); dropout and drop-path stay
at each library's defaults, so that where those differ the row says so (verify's stochastic-configuration
level, with the rates side by side). The Hugging Face models are the other way round: their config defaults
follow TensorFlow checkpoints, so each is configured to match timm wherever its config has the option
(dropout, drop-path, padding, BatchNorm epsilon and momentum: `options`, the config's settings); a setting
the config cannot change (the MobileNets' BatchNorm momentum, written into their code) is left, and the row
says where it shows. They return output objects: `repro.verify` compares their `logits`.

Results of {env["date"]} (torch {env["torch"]}, torchvision {env["torchvision"]}, timm {env["timm"]},
transformers {results["transformers"]}): {len(records)} pairs in {results["seconds"]:.0f} s on
{results["workers"]} worker processes (discovering the pairs: {results["discovery_seconds"]:.0f} s), per-pair
timeout {results["timeout_s"]:.0f} s; models over {results["max_params"]:,} parameters are not run here (memory), and
the workers verify at most {results.get("memory_params", MEMORY_PARAMS):,} candidate parameters at once.
Outcomes: `bit-identical` and `equivalent` are verify's verdicts (the same function in eval and in a train step,
decided in float64; bit-identical: float32 too); `same function, stochastic configuration differs`: both of those
hold and the libraries' default dropout or drop-path rates differ; `eval equivalent, train step undecided`: random
numbers drawn where no known rate turns them off may explain the train step's difference; `eval equivalent, train
step differs`: every
eval check passed and a train-step check did not (a BatchNorm momentum, say); `not equivalent`: the eval function
differs; `structures differ`: the modules do not pair one to one (the first place is named); `tool error` is an
exception from the build or from `repro.verify` (its message in `cause`). Where a divergence sits at a paired
module, `cause` also lists the settings in which it differs from its partner (`eps`, `momentum`, `padding`, ...):
a reading aid, not part of the verdict.
"""
    if results.get("repro_commit"):
        intro += f"\nRun on this repository at commit `{results['repro_commit']}`.\n"
    if results.get("note"):
        intro += f"\n**Note on these results:** {results['note']}\n"
    alone = pd.DataFrame({"torchvision model": results["without_counterpart"]})
    return Page("atlas", "Ecosystem atlas: torchvision, timm and transformers, verified", intro, [
        Table("atlas_summary", "Outcomes", summary),
        Table("atlas", "torchvision models against timm", _rows(records, "torchvision"),
              "How each pair was found and the seconds it took: in the CSV.", _page_columns("torchvision")),
        Table("atlas_transformers", "Hugging Face transformers CNNs against timm", _rows(records, "transformers"),
              "How each pair was found and the seconds it took: in the CSV.", _page_columns("transformers")),
        Table("atlas_without_counterpart", "torchvision classification models without a timm counterpart", alone,
              "No timm name matches by the name rule above."),
    ], files=[("atlas.json", (json.dumps(results, indent=1) + "\n").encode())])


def build(options: Options) -> Page:
    """``--full`` verifies every pair; quick mode reads the committed results (or, without them, runs
    the pairs of ``QUICK_SUBSET``)."""
    if options.full:
        results = run_atlas(options.atlas_pairs, options.atlas_workers, options.atlas_timeout_s,
                            options.atlas_max_params, _stderr)
        return build_page(results, "Run by `python -m repro.report --pages atlas --full`"
                          + (f" (pairs {' '.join(options.atlas_pairs)})." if options.atlas_pairs != ("*",) else "."))
    if options.atlas_results.is_file():
        results = read_results(options.atlas_results, "atlas", RESULTS_FORMAT, RERUN, RESULTS_FIELDS,
                               ("pairs", ("table", "candidate", "reference", "outcome", "how", "timm_tags")))
        with built_from(options.atlas_results, "atlas", RERUN):
            return build_page(results, f"Read from `{options.atlas_results}` (re-run: `--pages atlas --full`).")
    results = run_atlas(QUICK_SUBSET, progress=_stderr)
    return build_page(results, "Quick mode without committed results: a subset only.")


def _stderr(line: str) -> None:
    print(f"atlas: {line}", file=sys.stderr, flush=True)
