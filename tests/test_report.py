"""Reports: the HTML page, results.json, summary.md and junit.xml, built from synthetic stores (no training)."""
import json
import math
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mupbench.cli import main
from mupbench.config import DataSpec, ModelConfig, RunSpec, TrainConfig
from mupbench.store import Store
from mupbench.reports import junit, results, summary
from mupbench.reports.build import write_report
from mupbench.reports.sweep import read_coord_check

DATA = DataSpec("synthetic", "5a" * 32, 100_000, 256)
GRID = [-10.0, -9.0, -8.0, -7.0, -6.0, -5.0, -4.0]
WIDTHS = [32, 64, 128]
ENV = {"device": "cpu (1 thread)", "versions": {"torch": "2.13.0+cpu", "triton": "3.9.0"}, "git_rev": "abc123"}
EVIL = "evil<script>alert(1)</script>"


def _info(description, reported="transfers", expected=None):
    return {"description": description, "reported": reported, "expected": expected or reported,
            "source": "synthetic", "family": "test"}


def make_sweep(path: Path, groups: list[dict], seeds: int = 3, finish=lambda spec: True) -> Path:
    """A store whose final losses are parabolas in log2 LR with the optimum drifting `drift` per width doubling.

    groups: dicts with ablation, param, info, drift, optional opt (optimum at width 32) and diverge_above (log2 LR
    offset from the optimum beyond which runs diverge). `finish(spec)` decides which planned runs are stored.
    """
    store = Store(path, create=True)
    rng = np.random.default_rng(0)
    specs = []
    for i, g in enumerate(groups):
        for width in WIDTHS:
            for x in GRID:
                for seed in range(seeds):
                    # a run is the hash of its config: each group needs a config of its own (rope_base tells them apart)
                    model = ModelConfig(width=width, depth=1, head_dim=16, base_width=32, parameterization=g["param"],
                                        rope_base=10000.0 + i)
                    train = TrainConfig(lr=2.0**x, steps=100, warmup=10, eval_every=25, seed=seed)
                    specs.append((g, RunSpec(g["ablation"], model, train, DATA, extra={"suite": "test"})))
    store.add_plan([s for _, s in specs])
    store.set_meta("preset", "cpu-test")
    store.set_meta("suites", ["test"])
    store.set_meta("ablation_info", {g["ablation"]: g["info"] for g in groups if g.get("info")})
    for g, spec in specs:
        if not finish(spec):
            continue
        width, x = spec.model.width, spec.train.log2_lr
        opt = g.get("opt", -7.0) + g["drift"] * math.log2(width / 32)
        loss = 3.0 - 0.3 * math.log2(width / 32) + 0.08 * (x - opt) ** 2 + 0.01 * rng.standard_normal()
        diverged = x - opt > g.get("diverge_above", 99)
        curve = [(step, "val", loss + 2.0 / (1 + step / 10)) for step in (25, 50, 75, 100)]
        result = {"status": "diverged" if diverged else "ok", "final_val_loss": math.inf if diverged else loss,
                  "steps_done": 40 if diverged else 100, "n_params": 1000 * width, "tokens_per_s": 1e4,
                  "wall_s": 2.0, "kernels": "torch", "curve": [] if diverged else curve}
        store.record(spec, result, ENV)
    store.close()
    return path


GROUPS = [
    {"ablation": "baseline", "param": "mup", "drift": 0.0, "info": _info("nothing changed")},
    {"ablation": "baseline", "param": "sp", "drift": -1.0, "info": _info("nothing changed")},
    # registered as transferring, but its optimum drifts: a disagreement
    {"ablation": "drifty", "param": "mup", "drift": 0.9, "diverge_above": 1.5, "info": _info("drifts, diverges")},
    # the optimum sits on the lowest LR of the grid: inconclusive
    {"ablation": "edge_case", "param": "mup", "drift": 0.0, "opt": -11.0, "info": _info("edge", "shifts")},
    {"ablation": EVIL, "param": "mup", "drift": 0.0, "info": _info(f"description {EVIL} & more", "unknown")},
]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    sweep = make_sweep(tmp_path_factory.mktemp("sweep") / "s", GROUPS)
    paths = write_report(sweep)
    return sweep, paths


def test_cli_writes_four_files(tmp_path, capsys):
    # an optimum drifting 0.2 log2 units per width doubling: within the default δ, not within δ = 0.1
    sweep = make_sweep(tmp_path / "s", [{**GROUPS[0], "drift": 0.2}])
    assert main(["report", str(sweep), "--out", str(tmp_path / "elsewhere" / "page.html"), "--tolerance", "0.1"]) == 0
    out = capsys.readouterr().out
    for name in ("page.html", "results.json", "summary.md", "junit.xml"):
        assert (tmp_path / "elsewhere" / name).stat().st_size > 0
        assert str(tmp_path / "elsewhere" / name) in out
    doc = json.loads((tmp_path / "elsewhere" / "results.json").read_text())
    assert [v["verdict"] for v in doc["verdicts"]] == ["shifts"] and "δ = 0.1" in doc["verdicts"][0]["reason"]
    assert not (sweep / "report").exists()
    assert main(["analyze", str(sweep), "--json"]) == 0
    assert [v["verdict"] for v in json.loads(capsys.readouterr().out)["verdicts"]] == ["transfers"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a mupbench sweep directory" in err
    sweep = make_sweep(tmp_path / "s", GROUPS[:1])
    assert main(["report", str(sweep), "--tolerance", "-1"]) == 2
    assert "--tolerance" in capsys.readouterr().err and not (sweep / "report").exists()


def test_html_is_self_contained_with_a_figure_per_ablation(report):
    sweep, paths = report
    html = paths["report.html"].read_text()
    page = parse(html)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert "url(" not in html and "@import" not in html
    for tag, attrs in page.attrs:
        for key in ("src", "href", "srcset", "data", "action", "poster"):
            if key in attrs:
                value = attrs[key]
                assert value.startswith("data:image/png;base64,") if key == "src" else value.startswith("#"), (tag, key)
    lr_figures = [a["data-ablation"] for t, a in page.attrs if t == "figure" and "lr-sweep" in a.get("class", "")]
    assert sorted(lr_figures) == sorted({g["ablation"] for g in GROUPS})
    ids = {a["id"] for _, a in page.attrs if "id" in a}
    assert all(a["href"][1:] in ids for t, a in page.attrs if t == "a")
    assert paths["report.html"].stat().st_size < 3_000_000


def test_user_text_is_escaped(report):
    _, paths = report
    html = paths["report.html"].read_text()
    assert "<script>" not in html
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&amp; more" in html
    assert EVIL in "".join(parse(html).text)


def test_results_json_validates_and_judges_agreement(report):
    _, paths = report
    doc = json.loads(paths["results.json"].read_text())
    assert results.validate(doc) == []
    assert doc["schema"] == "mupbench.results/3"
    meta = doc["sweep"]
    assert meta["counts"] == {"planned": 315, "ok": 306, "diverged": 9, "failed": 0, "finished": 315, "complete": True}
    assert meta["corpus"]["sha256"] == DATA.sha256 and meta["versions"]["torch"] == ["2.13.0+cpu"]
    assert meta["git_revs"] == ["abc123"] and meta["wall_s"]["sum"] == pytest.approx(630.0)
    got = {(v["ablation"], v["parameterization"]): v for v in doc["verdicts"]}
    assert [k for k in got] == [("baseline", "mup"), ("baseline", "sp"), ("drifty", "mup"), ("edge_case", "mup"),
                                (EVIL, "mup")]  # registry (stored) order, μP before SP
    assert got["baseline", "mup"]["agreement"] == "agree"
    assert got["baseline", "sp"]["expected"] == "shifts"  # a μP ablation run under SP for comparison
    assert got["baseline", "sp"]["agreement"] == "agree" and got["baseline", "sp"]["reported"] == "unknown"
    assert got["baseline", "sp"]["verdict"] == "shifts"
    assert got["drifty", "mup"]["agreement"] == "disagree" and got["drifty", "mup"]["runs"]["diverged"] == 9
    lo, hi = got["drifty", "mup"]["drift_interval"]
    assert 0.35 < lo < 0.9 < hi and got["drifty", "mup"]["n_seeds"] == 3
    assert set(got["baseline", "mup"]["interval"]) == {"32", "64", "128"}
    assert got["edge_case", "mup"]["verdict"] == "inconclusive" and got["edge_case", "mup"]["agreement"] == "inconclusive"
    assert got[EVIL, "mup"]["agreement"] == "no expectation"
    assert set(got["baseline", "mup"]["optimal_log2_lr"]) == {"32", "64", "128"}


def test_schema_validator_reports_violations(report):
    _, paths = report
    doc = json.loads(paths["results.json"].read_text())
    del doc["sweep"]["counts"]["planned"]
    doc["verdicts"][0]["agreement"] = "maybe"
    doc["verdicts"][1]["spread"] = "wide"
    doc["verdicts"][2]["optimal_log2_lr"]["32"] = True
    doc["verdicts"][3]["surprise"] = 1
    errors = results.validate(doc)
    assert any("$.sweep.counts: missing 'planned'" in e for e in errors)
    assert any("$.verdicts[0].agreement" in e for e in errors)
    assert any("$.verdicts[1].spread" in e for e in errors)
    assert any("$.verdicts[2].optimal_log2_lr.32" in e for e in errors)
    assert any("unexpected key 'surprise'" in e for e in errors)
    assert len(errors) == 5


def test_junit_counts_failures_and_skips(report):
    _, paths = report
    root = ET.parse(paths["junit.xml"]).getroot()
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "2")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["drifty[mup]"].find("failure")
    assert failure.get("message").startswith("expected transfers, observed shifts: drift +0.8")
    assert "95% interval" in failure.get("message") and "|drift| > δ" in failure.get("message")
    assert cases["edge_case[mup]"].find("skipped").get("message").startswith("inconclusive: optimum on the grid edge")
    assert cases["baseline[mup]"].find("failure") is None and cases["baseline[mup]"].find("skipped") is None
    assert f"{EVIL}[mup]" in cases


def test_write_junit_takes_any_cases(tmp_path):
    cases = [junit.Case("pass", "gate"), junit.Case("broken", "gate", failure='a < b & "c"\nsecond line', time=1.5),
             junit.Case("later", "gate", skipped="not yet")]
    root = ET.parse(junit.write_junit(tmp_path / "j.xml", cases, suite_name="gate")).getroot()
    suite = root.find("testsuite")
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("gate", "3", "1", "1")
    failure = suite.find("testcase[@name='broken']/failure")
    assert failure.get("message") == 'a < b & "c"' and failure.text.endswith("second line")
    assert float(suite.get("time")) == 1.5


def test_summary_markdown(report):
    _, paths = report
    text = paths["summary.md"].read_text()
    lines = text.splitlines()
    assert lines[0] == "### mupbench · test · cpu-test"
    assert "2 agree, 1 disagree, 1 inconclusive, 1 no expectation" in text
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + 5 and "| w32 | w64 | w128 |" in table[0]
    assert any(line.startswith("| drifty | mup | transfers | shifts | ❌ disagree |") for line in table)
    assert "`edge_case` mup: optimum on the grid edge: width" in text and "| seeds |" in text
    generic = summary.summary_markdown("gate", ["check", "result"], [["a|b", True]], intro=["hello"])
    assert generic.startswith("### gate\n\nhello\n\n| check | result |") and "a\\|b | yes" in generic


def test_partial_sweep_says_how_complete_it_is(tmp_path):
    groups = GROUPS[:2] + [{"ablation": "later", "param": "mup", "drift": 0.0, "info": _info("not started")}]
    sweep = make_sweep(tmp_path / "s", groups,
                       finish=lambda s: s.ablation == "baseline" and (s.model.parameterization == "sp" or s.model.width < 128))
    paths = write_report(sweep, tmp_path / "out")
    doc = json.loads(paths["results.json"].read_text())
    assert results.validate(doc) == []
    counts = doc["sweep"]["counts"]
    assert (counts["finished"], counts["planned"], counts["complete"]) == (105, 189, False)
    got = {(v["ablation"], v["parameterization"]): v for v in doc["verdicts"]}
    assert got["baseline", "mup"]["complete"] is False and got["baseline", "sp"]["complete"] is True
    assert ("later", "mup") not in got
    assert {p["ablation"]: p["finished"] for p in doc["sweep"]["progress"] if p["parameterization"] == "mup"} == \
        {"baseline": 42, "later": 0}
    html = paths["report.html"].read_text()
    assert "Partial sweep:" in html and "105 of 189 planned runs finished" in html and "Not started yet" in html
    case = ET.parse(paths["junit.xml"]).getroot().find(".//testcase[@name='baseline[mup]']")
    assert case.find("skipped").get("message").startswith("sweep incomplete: 42/63 runs finished")


def test_sweep_without_finished_runs(tmp_path):
    sweep = make_sweep(tmp_path / "s", GROUPS[:1], finish=lambda s: False)
    paths = write_report(sweep, tmp_path / "out")
    doc = json.loads(paths["results.json"].read_text())
    assert results.validate(doc) == [] and doc["verdicts"] == []
    assert "No verdicts yet" in paths["report.html"].read_text()
    assert ET.parse(paths["junit.xml"]).getroot().get("tests") == "0"


def _coord_check(passed_modules=("embed", "attn.out")):
    records, slopes = [], []
    for step in (0, 1, 2):
        for scale, module in enumerate(("embed", "attn.out", "mlp.out"), 1):
            slope = 0.0 if module in passed_modules else 0.5 * step
            for width in (32, 64, 128):
                records.append({"width": width, "step": step, "module": module, "mean_abs": 0.3 * scale * width**slope,
                                "mean_abs_delta": 0.01 * scale * step * width**slope if step else None})
            slopes.append({"module": module, "step": step, "quantity": "mean_abs", "slope": slope,
                           "passed": abs(slope) <= 0.2})
    return {"label": "μP baseline", "parameterization": "mup", "widths": [32, 64, 128], "steps": [0, 1, 2],
            "threshold": 0.2, "passed": all(s["passed"] for s in slopes), "records": records, "slopes": slopes}


def test_coord_check_section(tmp_path):
    sweep = make_sweep(tmp_path / "s", GROUPS[:1])
    doc = {"schema": "mupbench.coord_check/1",
           "checks": [_coord_check(), _coord_check(("embed", "attn.out", "mlp.out")) | {"label": "all pass"}]}
    (sweep / "coord_check.json").write_text(json.dumps(doc))
    html = write_report(sweep, tmp_path / "out")["report.html"].read_text()
    page = parse(html)
    figs = [a for t, a in page.attrs if t == "figure" and a.get("class") == "coord-check"]
    assert len(figs) == 2
    assert html.count('<span class="badge disagree">fail</span>') == 2  # the failing μP check's failed slopes
    assert html.count('<span class="badge disagree">expected pass</span>') == 1
    assert "mlp.out" in html and "All 9 slope checks passed." in html
    sp_check = _coord_check() | {"parameterization": "sp", "expected": "fail", "passed": False}
    (sweep / "coord_check.json").write_text(json.dumps({"schema": "mupbench.coord_check/1", "checks": [sp_check]}))
    html = write_report(sweep, tmp_path / "out2")["report.html"].read_text()
    assert "2 of 9 slope checks failed, as expected." in html and "expected pass" not in html


@pytest.mark.parametrize("text, problem", [
    ("{not json", "is not readable JSON"),
    ('{"schema": "something else", "checks": []}', "is not a mupbench.coord_check/2 document"),
    ('{"schema": "mupbench.coord_check/1", "checks": [{"label": "x"}]}', "every check needs a list of records"),
])
def test_unreadable_coord_check_is_reported_not_fatal(tmp_path, text, problem):
    (tmp_path / "coord_check.json").write_text(text)
    doc, error = read_coord_check(tmp_path)
    assert doc is None and problem in error
    assert read_coord_check(tmp_path / "elsewhere") == (None, None)


CHROMIUM = shutil.which("chromium")
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.tagName))), true);
const _error = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _error(...a); };
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({errors: window.__errors, images: document.images.length, broken: broken});
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args, profile):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI's .ci/run installs it): rendering not checked")
def test_renders_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    _, paths = report
    probed = tmp_path / "probed.html"  # the report plus a script that records errors and undecodable images
    probed.write_text(paths["report.html"].read_text().replace("<head>", "<head>\n" + PROBE, 1))
    res = _chromium("--dump-dom", "--virtual-time-budget=5000", probed.as_uri(), profile=tmp_path / "p1")
    assert "id=\"probe\"" in res.stdout, res.stderr[-2000:]
    probe = json.loads(unescape(res.stdout.split('<pre id="probe">')[1].split("</pre>")[0]))
    assert probe["errors"] == [] and probe["broken"] == 0
    assert probe["images"] == parse(paths["report.html"].read_text()).tags.count("img") == 1 + 2 * 4

    shot = tmp_path / "shot.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1400,3000", paths["report.html"].as_uri(),
                    profile=tmp_path / "p2")
    assert shot.exists(), res.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1400)
    assert pixels[..., :3].std() > 0.05  # not one flat colour
    assert len(np.unique(pixels[::10, ::10, :3].reshape(-1, 3), axis=0)) > 50


def test_run_writes_the_report_at_the_end(tmp_path, corpus_file, monkeypatch, capsys):
    import mupbench.executors

    class FakeExecutor:  # stores results of the right shape instead of training, inside the real sweep loop
        def describe(self):
            return "a fake executor"

        def train(self, store, specs, progress=True):
            for spec in specs:
                loss = 3.0 + 0.1 * (spec.train.log2_lr + 7) ** 2 - 0.1 * math.log2(spec.model.width)
                store.record(spec, {"status": "ok", "final_val_loss": loss, "wall_s": 1.0,
                                    "curve": [(spec.train.steps, "val", loss)]}, ENV)

        def close(self):
            pass

    monkeypatch.setattr(mupbench.executors, "make_executor", lambda *a, **k: FakeExecutor())
    out = tmp_path / "micro"
    assert main(["run", "--suite", "smoke", "--preset", "cpu-micro", "--widths", "16,32", "--lrs", "2^-8,2^-7,2^-6",
                 "--seeds", "2", "--data", str(corpus_file), "--out", str(out), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert f"report: {out / 'report' / 'report.html'}" in stdout
    assert stdout.index("regret") < stdout.index("report: ")  # after the verdict table
    doc = json.loads((out / "report" / "results.json").read_text())
    assert results.validate(doc) == [] and doc["sweep"]["counts"]["finished"] == 24  # seed 1 on the same 3 LRs
    assert [(v["parameterization"], v["verdict"]) for v in doc["verdicts"]] == [("mup", "transfers"), ("sp", "transfers")]
