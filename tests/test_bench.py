"""`mass bench metagrad` and `mass bench adapt` run and write what they say (figures are not asserted:
benchmarks print numbers, tests check behaviour)."""

import json
from dataclasses import asdict

import pytest
import torch

from mass import bench_metagrad
from mass.bench_metagrad import MetaGradBenchConfig, TensorPeak
from mass.cli import main


@pytest.mark.slow
def test_bench_metagrad_measures_every_mode_and_they_agree(tmp_path, tiny_model_dir):
    config = tiny_model_dir / "config.json"
    assert main(["bench", "metagrad", f"model=random:{config}", "layers=2", "m=2", "tokens=16", "repeats=1",
                 "warmup=0", f"out={tmp_path}", "name=tiny"]) == 0
    result = json.loads((tmp_path / "metagrad-tiny.json").read_text())
    rows = {r["mode"]: r for r in result["rows"]}
    assert list(rows) == ["sft", "unrolled", "hybrid", "hybrid-recompute"]
    for mode in ("hybrid", "hybrid-recompute"):  # the same meta-gradient as unrolled, in float32
        assert rows[mode]["ds_reference"] == "unrolled" and rows[mode]["ds_rel_diff"] < 1e-4
    for row in rows.values():
        assert row["seconds"] > 0 and row["peak_gb"] >= 0 and row["tensor_peak_gb"] > 0 and row["memory_vs_sft"] > 0
    assert result["model_info"]["layers"] == 2
    assert "| hybrid-recompute |" in (tmp_path / "metagrad-tiny.md").read_text()


def test_tensor_peak_counts_new_storage_while_it_lives_and_nothing_that_existed_before():
    before = torch.zeros(1_000_000)  # 4 MB made outside: views and in-place writes of it are not new memory
    with TensorPeak() as tracked:
        before.add_(1)
        view = before[:10].view(2, 5)
        big = torch.ones(500_000)  # 2 MB
        del big
        small = torch.ones(250_000) * 2  # 1 MB for ones, then 1 MB for the product; ones freed
        assert tracked.live == 1_000_000
        with torch.enable_grad():  # saved for backward: alive until the graph goes
            x = torch.ones(10_000, requires_grad=True)
            y = (x.exp() * 3).sum()
            y.backward()
    assert tracked.peak == 2_000_000  # big alone, then ones + product; small and the graph's stay below
    assert tracked.live == 1_000_000 + 2 * 40_000 + 4  # small, x and x.grad, and y: the graph's went with it
    assert view.shape == (2, 5) and small.numel() and before[0] == 1


def test_a_mode_that_runs_out_of_memory_is_a_row_of_the_result_not_a_crash(monkeypatch, tiny_model_dir):
    cfg = MetaGradBenchConfig(model=f"random:{tiny_model_dir / 'config.json'}", layers=1, m=2, tokens=8, repeats=1,
                              warmup=0)

    def steps_beyond_memory(*args):
        def step():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB\nmore")
        return step

    monkeypatch.setattr(bench_metagrad, "_mode_fn", steps_beyond_memory)
    row = bench_metagrad.measure_mode(asdict(cfg), "unrolled")
    assert row == {"mode": "unrolled", "error": "out of memory: CUDA out of memory. Tried to allocate 80.00 GiB"}
    rows = [{"mode": "sft", "seconds": 1.0, "tensor_peak_gb": 2.0, "peak_gb": 3.0}, row,
            {"mode": "hybrid-recompute", "seconds": 2.0, "tensor_peak_gb": 1.0, "peak_gb": 1.5}]
    bench_metagrad._add_ratios(rows)
    assert rows[2]["memory_vs_sft"] == 0.5 and "memory_vs_unrolled" not in rows[2] and "memory_vs_sft" not in row
    table = bench_metagrad.format_table({"config": asdict(cfg), "model_info": {}, "device": "NVIDIA H100", "rows": rows})
    assert "| unrolled | out of memory: CUDA out of memory. Tried to allocate 80.00 GiB |" in table
    assert "| hybrid-recompute | 2.000 | 1.000 | 1.500 | - | 0.5 |" in table


def test_bench_metagrad_rejects_bad_settings_before_any_work(capsys):
    assert main(["bench", "metagrad", "modes=[hybrid,sideways]"]) == 2
    assert "sideways" in capsys.readouterr().err
    assert main(["bench", "metagrad", "model=random:no-such-preset"]) == 2
    assert "use one of" in capsys.readouterr().err
    assert main(["bench", "metagrad", "layers=3"]) == 2  # layers= only for random weights
    assert main(["bench", "nothing"]) == 2


@pytest.mark.slow
def test_bench_adapt_breaks_down_each_methods_seconds(tmp_path, tiny_model_dir):
    assert main(["bench", "adapt", f"model={tiny_model_dir}", "methods=[base,ttss]", "limit=2",
                 "tuned.ttss.steps=1", "tuned.ttss.m=3", f"out={tmp_path}", "name=tiny"]) == 0
    result = json.loads((tmp_path / "adapt-tiny.json").read_text())
    base, ttss = result["rows"]
    assert (base["method"], ttss["method"], base["n"]) == ("base", "ttss", 2)
    assert (base["setting"], ttss["setting"]) == ("", "K=1, lr=1, m=3")  # the method's own tuned settings
    assert base["generate"] == 0 and base["answer"] == base["seconds"]
    assert ttss["generate"] > 0 and ttss["update"] > 0 and ttss["answer"] > 0
    assert ttss["generate"] + ttss["score"] + ttss["update"] + ttss["answer"] <= ttss["seconds"] * 1.05
    assert result["floor_seconds"] == pytest.approx((result["m"] + 1) * base["seconds"], rel=1e-3)
    assert ttss["x_floor"] == pytest.approx(ttss["seconds"] / (4 * base["seconds"]), abs=0.01)  # its own m=3
