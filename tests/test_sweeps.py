"""Sweep scripts (analyses/): an interrupted sweep resumes, nothing lost, nothing run twice."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analyses import _sweep as sw  # noqa: E402
from analyses import sweep_rank_targets, sweep_tokens  # noqa: E402

# A grid small enough to measure for real in well under a second a point.
TINY = ["--widths", "32,64", "--shapes", "1x8,2x8", "--layers", "1", "--steps", "1", "--warmup", "0",
        "--device", "cpu", "--no-progress", "--quick"]


class Counting:
    """Wraps measure_point; records every key it measured; raises after ``fail_after`` calls."""

    def __init__(self, fail_after=None):
        self.keys, self.fail_after = [], fail_after

    def __call__(self, params):
        if self.fail_after is not None and len(self.keys) >= self.fail_after:
            raise KeyboardInterrupt  # as Ctrl-C mid-sweep
        self.keys.append(sw.point_key(params))
        return sw.measure_point(params)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sweep_tokens_resumes_after_max_points(tmp_path, capsys):
    first, second = Counting(), Counting()
    assert sweep_tokens.run(TINY + ["--out-dir", str(tmp_path), "--max-points", "3"], measure=first) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["ran"], out["reused"], out["remaining"]) == (3, 0, 1)
    assert sweep_tokens.run(TINY + ["--out-dir", str(tmp_path)], measure=second) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["ran"], out["reused"], out["remaining"], out["ok"]) == (1, 3, 0, 4)
    ran = first.keys + second.keys
    assert len(ran) == len(set(ran)) == 4  # nothing ran twice
    records = _lines(tmp_path / "data" / "sweep_tokens-quick-cpu.jsonl")
    assert sorted(sw.point_key(r["params"]) for r in records) == sorted(ran)  # nothing lost
    assert {r["tokens_per_step"] for r in records} == {8, 16}
    assert all(r["modes"][m]["status"] == "ok" for r in records for m in sw.MODES)
    assert all(r["linear_params"] > r["adapter_params"] > 0 for r in records)
    for ext in ("png", "pdf"):
        assert (tmp_path / f"sweep_tokens-quick-cpu.{ext}").stat().st_size > 1000


def test_interrupted_sweep_resumes(tmp_path):
    grid = [dict(preset="tiny", n_layer=1, n_embd=32, n_head=1, vocab_size=64, batch_size=1, seq_len=s,
                 rank=r, alpha=16.0, dropout=0.0, targets="attention", device="cpu", threads=1, warmup=0,
                 steps=1, seed=0) for s in (4, 8) for r in (2, 4)]
    results = tmp_path / "r.jsonl"
    first = Counting(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(grid + grid[:1], first, results, progress=False)  # a duplicate point runs once
    assert len(_lines(results)) == 2
    second = Counting()
    outcome = sw.run_sweep(grid, second, results, progress=False)
    assert (outcome.ran, outcome.reused, outcome.remaining) == (2, 2, 0)
    assert len(first.keys + second.keys) == len(set(first.keys + second.keys)) == 4
    assert [r["params"] for r in outcome.records] == grid  # grid order
    assert sw.run_sweep(grid, Counting(fail_after=0), results, progress=False).ran == 0


def test_cut_line_dropped_and_file_repaired(tmp_path):
    path = tmp_path / "r.jsonl"
    sw.append_result(path, {"params": {"a": 1}, "x": 1})
    with open(path, "a") as f:
        f.write('{"params": {"a": 2}, "x"')  # killed mid-write
    assert list(sw.load_results(path)) == [sw.point_key({"a": 1})]
    sw.append_result(path, {"params": {"a": 2}, "x": 2})
    assert [r["x"] for r in _lines(path)] == [1, 2]


def test_broken_middle_line_raises(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"params": {"a": 1}}\nnot json\n{"params": {"a": 2}}\n')
    with pytest.raises(sw.SweepError, match="r.jsonl:2"):
        sw.load_results(path)


@pytest.mark.slow
def test_rank_targets_shares_a_point_and_draws(tmp_path, capsys):
    args = ["--ranks", "2,8", "--target-rank", "8", "--width", "32", "--layers", "1", "--batch-size", "1",
            "--seq-len", "8", "--steps", "1", "--warmup", "0", "--device", "cpu", "--no-progress",
            "--out-dir", str(tmp_path)]
    counting = Counting()
    assert sweep_rank_targets.run(args, measure=counting) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["points"] == out["ran"] == len(counting.keys) == 4  # rank 8 / attention shared
    assert (tmp_path / "sweep_rank_targets-quick-cpu.png").exists()
    assert sweep_rank_targets.run(args + ["--draw-only"], measure=Counting(fail_after=0)) == 0


def test_bad_device_is_one_line(capsys):
    assert sweep_tokens.main(["--device", "tpu"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_redo_noisy_remeasures_on_request_only(tmp_path):
    results = tmp_path / "r.jsonl"

    def fake(iqr):
        def measure(params):
            return {"params": params, "modes": {"lora": {"step_time_s": {"median": 1.0, "iqr": iqr}}}}
        return measure

    grid = [{"a": 1}, {"a": 2}]
    sw.run_sweep(grid, fake(0.5), results, progress=False)
    assert sw.run_sweep(grid, fake(0.1), results, progress=False).ran == 0  # nothing runs twice unasked
    again = sw.run_sweep(grid, fake(0.1), results, progress=False, redo=sw.noisy(0.3))
    assert again.ran == 2 and all(r["modes"]["lora"]["step_time_s"]["iqr"] == 0.1 for r in again.records)
    assert len(_lines(results)) == 4  # the old lines stay; the later line wins on load
    assert sw.run_sweep(grid, fake(0.1), results, progress=False, redo=sw.noisy(0.3)).ran == 0
