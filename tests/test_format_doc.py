"""docs/FORMAT.md documents exactly what the code writes: its JSON blocks against real files."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"
pytestmark = pytest.mark.slow  # a real tiny run with --validate


def blocks():
    """The doc's jsonc blocks, parsed, each with the optional keys listed after it."""
    text = DOC.read_text()
    out = []
    for m in re.finditer(r"```jsonc\n(.*?)```(.*?)(?=```|\Z)", text, re.S):
        body = "\n".join(line.split("//")[0] for line in m.group(1).splitlines())
        body = body.strip()
        if body.startswith('"'):
            body = "{" + body + "}"
        opt = re.search(r"Optional keys: (.*?)\.\n", m.group(2), re.S)
        optional = {k.strip() for k in opt.group(1).replace("\n", " ").split(",")} if opt else set()
        out.append((json.loads(body), optional))
    return out


def paths(obj, prefix=(), opaque=False):
    """Key paths of a JSON value: dict keys, '[]' for list elements (every element of a real file's
    list, the one element a doc shows); with ``opaque`` (the doc) an empty {} / [] stands for
    anything, marked '*'."""
    if isinstance(obj, dict):
        if not obj and opaque:
            yield prefix + ("*",)
        for k, v in obj.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,), opaque)
    elif isinstance(obj, list):
        if not obj and opaque:
            yield prefix + ("[]", "*")
        for item in (obj[:1] if opaque else obj):
            yield from paths(item, prefix + ("[]",), opaque)


def documented(path, doc_paths) -> bool:
    for d in doc_paths:
        if d[-1] == "*" and len(path) >= len(d) - 1 and all(_match(a, b) for a, b in zip(d[:-1], path)):
            return True
        if len(d) == len(path) and all(_match(a, b) for a, b in zip(d, path)):
            return True
    return False


def _match(doc_key, key) -> bool:
    return doc_key == key or (doc_key.startswith("<") and doc_key.endswith(">"))


def present(doc_path, real_paths) -> bool:
    d = list(doc_path)
    while d and d[-1] in ("*", "[]"):  # an opaque container: the key holding it must be there
        d.pop()
    if _has(d, real_paths):
        return True
    if "[]" in d:  # the keys of a list's elements: owed only when the real list has elements
        holder = d[:d.index("[]")]
        return _has(holder, real_paths) and not _has(holder + ["[]"], real_paths)
    return False


def _has(d, real_paths) -> bool:
    return any(len(p) >= len(d) and all(_match(a, b) for a, b in zip(d, p)) for p in real_paths)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fmt") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "lora_profiler.trace", "--preset", "tiny", "--steps", "3", "--warmup", "1",
         "--profile-steps", "2", "--validate", "--advise",
         "--modes", "full,lora,frozen,forward,fused-lora", "--no-figures", "--quiet", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return (json.loads((out / "facts.json").read_text()), json.loads((out / "report.json").read_text()),
            json.loads((out / "census.json").read_text()))


def _check(real, doc, optional):
    doc_paths = list(paths(doc, opaque=True))
    real_paths = list(paths(real))
    undocumented = {"/".join(p) for p in real_paths if not documented(p, doc_paths)}
    assert not undocumented, f"written but not in docs/FORMAT.md: {sorted(undocumented)[:20]}"
    missing = {"/".join(d) for d in doc_paths if not (set(d) & optional) and not present(d, real_paths)}
    assert not missing, f"in docs/FORMAT.md but not written: {sorted(missing)[:20]}"


def test_facts_keys_match_the_doc(run):
    facts, _, _ = run
    (doc, optional), *_ = blocks()
    _check(facts, doc, optional)


def test_report_keys_match_the_doc(run):
    facts, report, _ = run
    (_, _), (top, top_opt), (att, att_opt), (cause, cause_opt), *_ = blocks()
    added = {k: v for k, v in report.items() if k not in facts or k in ("kind", "version")}
    _check(added, top, top_opt)
    _check({"attribution": report["attribution"]}, att, att_opt)
    for section in (report["attribution"], report["attribution"]["vs_full"]):
        for name, entry in section["causes"].items():
            _check(entry, cause, cause_opt)
    real, doc = set(report["attribution"]["causes"]), set(att["attribution"]["causes"])
    assert doc - att_opt <= real <= doc  # optional causes (page_faults_unseen) only when they occur


def test_prediction_and_census_match_the_doc(run):
    _, report, census = run
    *_, (pred, pred_opt), (cens, cens_opt) = blocks()
    _check({"prediction": report["prediction"]}, pred, pred_opt)
    _check(census, cens, cens_opt)
    # every mode run has a measured row; strategies not run are predicted only
    rows = {r["mode"]: r for r in report["prediction"]["rows"]}
    assert {"full", "lora", "frozen", "forward", "fused-lora"} <= set(rows)
    assert all(rows[m]["measured_s"] and rows[m]["error"] is not None for m in ("full", "lora", "frozen"))
    assert all(r["measured_s"] is None for m, r in rows.items() if m not in census["measured"])


def test_unfinished_and_resumed_facts_match_the_doc(tmp_path, monkeypatch, capsys):
    """The keys an interrupted run (status, progress) and a resumed one (resumed) add are
    documented; the rest is as in a complete run."""
    from lora_profiler import trace
    from lora_profiler.capture import checkpoint
    from lora_profiler.runstate import RunInterrupted

    out = tmp_path / "run"
    real_at = checkpoint.Checkpoint.at

    def at(self, phase, where):
        real_at(self, phase, where)
        if where == "timed round 2 of 3":
            raise RunInterrupted(2)

    monkeypatch.setattr(checkpoint.Checkpoint, "at", at)
    argv = ["--preset", "tiny", "--steps", "3", "--block", "1", "--warmup", "0", "--profile-steps", "2",
            "--no-figures", "--no-calibrate", "--quiet", "--device", "cpu", "--out", str(out)]
    assert trace.main(argv) == 130
    (doc, optional), *_ = blocks()
    interrupted = json.loads((out / "facts.json").read_text())
    assert interrupted["status"] == "interrupted"
    undocumented = {"/".join(p) for p in paths(interrupted) if not documented(p, list(paths(doc, opaque=True)))}
    assert not undocumented, f"written but not in docs/FORMAT.md: {sorted(undocumented)[:20]}"
    monkeypatch.undo()
    assert trace.main(["--resume", str(out), "--quiet"]) == 0
    resumed = json.loads((out / "facts.json").read_text())
    assert "resumed" in resumed and "progress" not in resumed
    _check(resumed, doc, optional)
    capsys.readouterr()
