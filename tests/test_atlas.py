"""The ecosystem atlas: pairs found from the installed libraries, each verified in a worker, failures recorded."""

import json

import pytest
import timm
import torch
import torchvision
from torch import nn

import repro
from repro.report import DEFAULT_ATLAS_RESULTS, Options
from repro.report import atlas, runtimes
from repro.report.base import ReportError


def test_every_torchvision_tag_of_timm_is_one_pair_with_a_torchvision_model():
    pairs = atlas.tv_tagged_pairs()
    tags = sorted(f"{p.reference.split(':', 1)[1]}.{t}" for p in pairs for t in p.timm_tags)
    assert tags == sorted(timm.list_pretrained("*.tv*"))
    tv_names = set(torchvision.models.list_models(module=torchvision.models))
    assert all(p.name in tv_names and p.table == "torchvision" for p in pairs)
    by_timm = {p.reference: p.name for p in pairs}
    # Derived from the checkpoint URL (timm's name says nothing of torchvision's), and from the name.
    assert by_timm["timm:regnetx_004_tv"] == "regnet_x_400mf"
    assert by_timm["timm:regnety_016"] == "regnet_y_1_6gf"
    assert by_timm["timm:vgg16_bn"] == "vgg16_bn"
    assert {t for p in pairs if p.reference == "timm:resnet50" for t in p.timm_tags} == {"tv_in1k", "tv2_in1k"}


@pytest.mark.parametrize("tv, expected", [
    ("mobilenet_v2", "mobilenetv2_100"),
    ("mnasnet1_0", "mnasnet_100"),
    ("mnasnet0_75", "mnasnet_075"),
    ("vit_b_16", "vit_base_patch16"),
    ("swin_t", "swin_tiny"),
    ("efficientnet_v2_s", "tf_efficientnetv2_s"),
    ("regnet_y_128gf", "regnety_1280"),
    ("regnet_x_400mf", "regnetx_004"),
    ("convnext_tiny", "convnext_tiny"),
])
def test_name_rule(tv, expected):
    assert expected in atlas.normalized_names(tv)


def test_name_matching_on_the_installed_libraries_keeps_the_parameter_count():
    keep = {"mobilenet_v2", "alexnet", "mnasnet1_0"}
    others = set(torchvision.models.list_models(module=torchvision.models)) - keep
    pairs, alone = atlas.name_matched_pairs(others)
    assert {(p.name, p.reference) for p in pairs} == {("mobilenet_v2", "timm:mobilenetv2_100"),
                                                     ("mnasnet1_0", "timm:mnasnet_100")}
    assert alone == ["alexnet"]


def test_one_pair_end_to_end_and_a_failing_pair_is_recorded_not_raised():
    good = atlas.Pair("torchvision", "torchvision:resnet18", "timm:resnet18", "test")
    bad = atlas.Pair("transformers", "transformers:no_such_model", "timm:resnet18", "test")
    records = atlas.run_pairs([good, bad], workers=2, timeout_s=300)
    ok, failed = records
    assert ok["outcome"] == "ran" and atlas.outcome(ok) == "bit-identical", ok
    assert ok["input_size"] == [2, 3, 64, 64] and ok["ported"] == 122
    assert failed["outcome"] == "error" and failed["error"].startswith("KeyError: 'no_such_model'")
    assert atlas.outcome(failed) == "tool error" and "atlas.py" in failed["raised_at"]
    results = {"environment": {"date": "d", "torch": "t", "torchvision": "v", "timm": "m"}, "transformers": "x",
               "seconds": 1.0, "discovery_seconds": 1.0, "workers": 2, "timeout_s": 300, "max_params": 1,
               "without_counterpart": ["alexnet"], "pairs": json.loads(json.dumps(records))}
    page = atlas.build_page(results, "test")
    summary, tv_table, hf_table, alone = (t.frame for t in page.tables)
    assert dict(zip(summary["outcome"], summary["pairs"])) == {"bit-identical": 1, "tool error": 1}
    assert list(tv_table["outcome"]) == ["bit-identical"] and list(hf_table["outcome"]) == ["tool error"]
    assert "KeyError" in hf_table["cause"][0] and list(alone["torchvision model"]) == ["alexnet"]
    assert dict(page.files)["atlas.json"]


class Tiny(nn.Module):
    def __init__(self, p: float = 0.0, eps: float = 1e-5, momentum: float = 0.1, extra: bool = False,
                 drop_connect: float = 0.0) -> None:
        super().__init__()
        self.drop_connect = (drop_connect,)  # a rate no attribute holds: drawn, never turned off
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4, eps=eps, momentum=momentum)
        self.extra = nn.Conv2d(4, 4, 1) if extra else nn.Identity()
        self.drop = nn.Dropout(p)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.extra(torch.relu(self.bn(self.conv(x))))
        if self.training and self.drop_connect[0]:
            y = y * (torch.rand(y.shape[0], 1, 1, 1) >= self.drop_connect[0]) / (1 - self.drop_connect[0])
        return self.fc(self.drop(y.mean((2, 3))))


@pytest.mark.parametrize("candidate, expected, cause", [
    (Tiny(), "bit-identical", ""),
    (Tiny(p=0.2), atlas.SAME_FUNCTION, "Dropout.p 0.2"),
    (Tiny(momentum=0.01), "eval equivalent, train step differs", "momentum 0.01 vs 0.1"),
    (Tiny(eps=1e-3), "not equivalent", "eps 0.001 vs 1e-05"),
    (Tiny(extra=True), "structures differ", "extra"),
    (Tiny(drop_connect=0.5), atlas.TRAIN_UNDECIDED, "still drawn"),
], ids=["same", "dropout", "momentum", "eps", "extra-module", "drop-connect"])
def test_outcomes_read_verify_levels(candidate, expected, cause):
    report = repro.verify(candidate, Tiny(), input_size=(2, 3, 8, 8))
    record = {"table": "torchvision", "outcome": "ran", "report": json.loads(json.dumps(report.to_dict()))}
    assert atlas.outcome(record) == expected, str(report)
    assert cause in atlas.cause(record)
    assert set(atlas.levels(record)) == {"eval", "train step", "stochastic configuration"}


def test_pairs_start_in_order_while_their_parameters_fit_in_memory_together():
    load = [150, 150, 20, 300]
    assert atlas.next_pair([0, 1, 2, 3], [], load, 250) == 0
    assert atlas.next_pair([1, 2, 3], [0], load, 250) == 2  # 1 waits: 300 together would not fit
    assert atlas.next_pair([1, 3], [0], load, 250) is None
    assert atlas.next_pair([3], [], load, 250) == 3  # larger than the budget: it runs alone


def test_a_pair_past_its_timeout_is_recorded_and_the_rest_still_run():
    pair = atlas.Pair("torchvision", "torchvision:resnet18", "timm:resnet18", "test")
    records = atlas.run_pairs([pair, pair], workers=1, timeout_s=0.01)
    assert [r["outcome"] for r in records] == ["timeout", "timeout"]
    assert records[0]["error"] == "no result within 0 s"


def test_a_full_run_takes_its_settings_from_the_report_command_line(monkeypatch, tmp_path, capsys):
    """``--atlas-pairs/-workers/-timeout/-max-params`` reach the run; they need --full; patterns that match no pair
    and settings out of range are one-line errors (exit 2) before anything runs or is written."""
    pair = atlas.Pair("torchvision", "torchvision:resnet18", "timm:resnet18", "test")
    monkeypatch.setattr(atlas, "discover", lambda: atlas.Discovery([pair], [], 0.0))
    ran = []
    monkeypatch.setattr(atlas, "run_pairs", lambda pairs, *settings: ran.append((pairs, settings)) or [])
    page = atlas.build(Options(full=True, atlas_pairs=("torchvision:resnet*",), atlas_workers=3, atlas_timeout_s=9.0,
                               atlas_max_params=1000))
    assert ran == [([pair], (3, 9.0, 1000, atlas._stderr))]
    assert "(pairs torchvision:resnet*)" in page.intro
    out = tmp_path / "r"
    for argv, says in [
        (["--pages", "atlas", "--atlas-workers", "3"], "--atlas-workers sets a full atlas run: add --full"),
        (["--full", "--pages", "atlas", "--atlas-timeout", "0"], "--atlas-timeout must be above 0"),
        (["--full", "--pages", "atlas", "--atlas-pairs", "timm:*"], "--atlas-pairs timm:*: no pair's candidate"),
    ]:
        assert repro.report.main(argv + ["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.skipif(not DEFAULT_ATLAS_RESULTS.is_file(), reason="no committed atlas results")
def test_quick_mode_reads_the_committed_results():
    committed = json.loads(DEFAULT_ATLAS_RESULTS.read_text())
    page = atlas.build(Options())
    tables = {t.slug: t.frame for t in page.tables}
    assert len(tables["atlas"]) == sum(r["table"] == "torchvision" for r in committed["pairs"])
    assert len(tables["atlas_transformers"]) == sum(r["table"] == "transformers" for r in committed["pairs"])
    assert tables["atlas_summary"]["pairs"].sum() == len(committed["pairs"])


@pytest.mark.parametrize("page, content, says", [
    ("atlas", '{"pairs": []}', "atlas results of format None, this code reads format 2; re-make them with"),
    ("atlas", "{not json", "not readable as atlas results (JSONDecodeError"),
    # a file of the right format, edited or cut short: what is missing is named, not a KeyError in the page
    ("atlas", '{"format": 2}', "not atlas results as this code writes them: environment (missing, not dict);"),
    ("atlas", '{"format": 2, "environment": {}, "transformers": "4", "workers": true, "timeout_s": 300, '
              '"max_params": 1, "discovery_seconds": 1, "seconds": 1, "without_counterpart": [], "pairs": {}}',
     "workers (bool, not int); pairs (dict, not list)"),
    ("atlas", '{"format": 2, "environment": {}, "transformers": "4", "workers": 2, "timeout_s": 300, '
              '"max_params": 1, "discovery_seconds": 1, "seconds": 1, "without_counterpart": [], '
              '"pairs": [{"table": "torchvision", "candidate": "a", "reference": "b"}, 3]}',
     "pairs[0] (no outcome, how, timm_tags); pairs[1] (not an object)"),
    # every record has its keys, but a verified one lacks its report: named, not a KeyError in the page
    ("atlas", '{"format": 2, "environment": {}, "transformers": "4", "workers": 2, "timeout_s": 300, '
              '"max_params": 1, "discovery_seconds": 1, "seconds": 1, "without_counterpart": [], '
              '"pairs": [{"table": "torchvision", "candidate": "torchvision:a", "reference": "timm:b", '
              '"outcome": "ran", "how": "name", "timm_tags": []}]}',
     "not atlas results as this code writes them (KeyError: 'report')"),
])
def test_saved_results_of_another_format_are_a_one_line_error(tmp_path, capsys, page, content, says):
    """Quick mode reads a page's saved results; a file an older version wrote is named, with how to re-make it."""
    from_before = tmp_path / f"{page}.json"
    from_before.write_text(content)
    out = tmp_path / "report"
    code = repro.report.main(["--pages", page, f"--{page}-results", str(from_before), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and from_before.read_text() == content


def test_saved_runtimes_of_another_format_are_a_one_line_error(tmp_path):
    from_before = tmp_path / "runtimes.json"
    from_before.write_text('{"format": 0, "measurements": []}')
    with pytest.raises(ReportError, match=r"runtimes results of format 0, this code reads format 1; re-make them with"):
        runtimes.build(Options(runtimes_results=from_before))
    from_before.write_text('{"format": 1, "environment": {}, "threads": 2, "rounds": 3, "min_run_time": 0.5, '
                           '"measurements": [{"model": "resnet50"}]}')
    with pytest.raises(ReportError, match=r"not runtimes results as this code writes them: measurements\[0\] \(no "
                                          r"resolution, runtime,"):
        runtimes.build(Options(runtimes_results=from_before))


def test_a_transformers_rows_options_are_its_config_settings():
    """The Hugging Face models are configured to match timm: the row shows the settings, not a blank."""
    record = {"table": "transformers", "candidate_kwargs": {"num_labels": 1000, "batch_norm_momentum": 0.1},
              "reference_kwargs": {}}
    assert atlas._options(record) == "config batch_norm_momentum=0.1"
    record = {"table": "torchvision", "candidate_kwargs": {"aux_logits": False}, "reference_kwargs": {"drop_rate": 0}}
    assert atlas._options(record) == "aux_logits=False, timm drop_rate=0"
