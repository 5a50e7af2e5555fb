"""The benchmark runs end to end on tiny data and reports what it promises.

No timing is asserted: a benchmark's numbers are not a test's business
(only that they are there, positive and consistent with each other).
"""

import json
import math

import pytest

from helpers import HAS_CXX
from study import bench
from study.measure.notebook import notebook_dataset

# The compiled trainer at batch 64 only (a compile costs seconds per shape),
# where torch.compile can build.
COMPILED = [64] if HAS_CXX else []

PIPELINE_RUNS = {"notebook": 1, "trainer": 1, "trainer-compiled": 1}
ROW_KEYS = {"pipeline", "batch_size", "norm", "runs", "samples_per_second", "x_notebook", "x_sequential",
            "fraction_of_ceiling", "samples", "seconds", "deterministic", "cpu_wait", "precision", "x_fp32"}
TOP_KEYS = {"schema_version", "kind", "started_at", "finished_at", "wall_seconds", "command", "settings",
            "model", "data", "env", "ceiling", "rows", "packs", "targets"}
ENV_KEYS = {"torch", "device", "device_name", "threads", "cpu_count", "deterministic", "git_commit"}


def tiny_args(root, *extra):
    # One thread: the test machine may be shared, and oversubscribed threads are slow.
    return ["--data-root", str(root), "--no-verify", "--samples", "16", "--warmup", "8", "--pack", "2,3",
            "--matmul-n", "256", "--matmul-reps", "1", "--settle", "0", "--repeats", "1", "--threads", "1",
            *extra, "data.val_size=200"]


@pytest.fixture(scope="module")
def bench_run(tiny_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub" / "bench.json"
    result = bench.main(tiny_args(tiny_mnist, "--compile-batches", ",".join(map(str, COMPILED)),
                                  "--json", str(out)))
    return result, out


def test_json_has_the_documented_fields(bench_run):
    result, out = bench_run
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(result))  # what was returned is what was written
    assert TOP_KEYS <= set(on_disk)
    assert on_disk["kind"] == "bench" and on_disk["schema_version"] == bench.BENCH_SCHEMA_VERSION
    assert ENV_KEYS <= set(on_disk["env"]) and on_disk["env"]["threads"] == 1
    assert on_disk["data"]["verified"] is False and on_disk["data"]["n_train"] == 1000
    s = on_disk["settings"]
    assert s["batch_sizes"] == [8, 64, 512] and s["norms"] == ["none", "batch"] and s["pack"] == [2, 3]
    assert s["compile_batches"] == COMPILED
    assert on_disk["model"]["architecture"] == "784-128-64-10"
    assert on_disk["model"]["flops_per_sample"] == 3 * 2 * (784 * 128 + 128 * 64 + 64 * 10)
    c = on_disk["ceiling"]
    assert c["n"] == 256 and c["gflops"] > 0 and c["measurements"] == 2 + 6  # before, each cell, after
    assert math.isclose(c["samples_per_second"], c["gflops"] * 1e9 / c["flops_per_sample"])


def test_every_pipeline_batch_norm_row_is_there(bench_run):
    result, _ = bench_run
    rows = {(r["pipeline"], r["batch_size"], r["norm"], r["runs"]): r for r in result["rows"]}
    expected = {(p, b, n, 1) for b in (8, 64, 512) for n in ("none", "batch") for p in ("notebook", "trainer")}
    expected |= {("trainer-compiled", b, n, 1) for b in COMPILED for n in ("none", "batch")}
    expected |= {(p, 8, n, k) for n in ("none", "batch") for p in ("trainer-pack", "trainer-sequential")
                 for k in (2, 3)}
    assert set(rows) == expected
    for (pipeline, b, n, runs), r in rows.items():
        assert ROW_KEYS <= set(r)
        assert r["runs"] == PIPELINE_RUNS.get(pipeline, runs)
        assert r["samples_per_second"] > 0 and r["seconds"] > 0
        base = rows[("notebook", b, n, 1)]["samples_per_second"]
        assert math.isclose(r["x_notebook"], r["samples_per_second"] / base)
        assert math.isclose(r["fraction_of_ceiling"],
                            r["samples_per_second"] / result["ceiling"]["samples_per_second"])
        # The sample budget is met (whole batches; every run of a pack counts).
        assert r["samples"] >= 16 * (r["runs"] if pipeline.startswith("trainer-") else 1)
    assert rows[("notebook", 8, "none", 1)]["deterministic"] is False
    assert rows[("trainer", 8, "none", 1)]["deterministic"] is True


def test_packs_and_targets_are_consistent(bench_run):
    result, _ = bench_run
    assert {(p["batch_size"], p["norm"], p["runs"]) for p in result["packs"]} == {
        (8, n, k) for n in ("none", "batch") for k in (2, 3)}
    for p in result["packs"]:
        assert math.isclose(p["ratio"], p["pack_samples_per_second"] / p["sequential_samples_per_second"])
    names = {(t["name"], t["pipeline"], t["batch_size"], t["norm"], t.get("runs")) for t in result["targets"]}
    assert names == {(name, "trainer", b, n, None) for n in ("none", "batch")
                     for name, b in (("trainer_x_notebook", 64), ("trainer_fraction_of_ceiling", 512))} | {
        ("trainer_x_notebook", "trainer-compiled", b, n, None) for b in COMPILED for n in ("none", "batch")} | {
        ("pack_x_sequential", "trainer-pack", 8, n, k) for n in ("none", "batch") for k in (2, 3)} | {
        ("bn_fraction_of_ceiling", "trainer", 64, "batch", None)}
    for t in result["targets"]:
        assert t["met"] == (t["value"] >= t["target"])


def test_table_prints_every_row(capsys, tiny_mnist):
    # Printing is checked on a second, smaller run so the captured output is its own.
    result = bench.main(tiny_args(tiny_mnist, "--batch-sizes", "8,16", "--norms", "batch",
                                  "--compile-batches", "16" if HAS_CXX else ""))
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["pipeline", "batch", "norm", "runs"]
    for r in result["rows"]:
        assert any(line.split()[:4] == [r["pipeline"], str(r["batch_size"]), r["norm"], str(r["runs"])]
                   for line in lines), (r["pipeline"], r["batch_size"], r["norm"])
    assert "matmul ceiling" in out and "GFLOP/s" in out
    assert "pack at batch 8, norm batch: 2 runs packed" in out
    assert "pack at batch 8, norm batch: 3 runs packed" in out
    assert "target pack_x_sequential batch 8 norm batch pack of 3:" in out
    assert {r["pipeline"] for r in result["rows"] if r["batch_size"] == 16} == {
        "notebook", "trainer", *(["trainer-compiled"] if HAS_CXX else [])}
    assert all(r["pipeline"] != "trainer-compiled" for r in result["rows"] if r["batch_size"] == 8)


def test_precisions_are_measured_against_the_fp32_trainer(capsys, tiny_mnist):
    """--precisions: the trainer in tf32 and bf16 (and fp32 on autograd, what bf16 trains with), each
    with its samples/s over the fp32 trainer's of its cell; a line per cell says the ratios."""
    result = bench.main(tiny_args(tiny_mnist, "--batch-sizes", "64", "--norms", "batch", "--pack-batches", "",
                                  "--compile-batches", "", "--precisions", "bf16,tf32"))
    out = capsys.readouterr().out
    assert result["settings"]["precisions"] == ["fp32", "bf16", "tf32"]
    rows = {r["pipeline"]: r for r in result["rows"]}
    assert set(rows) == {"notebook", "trainer", "trainer-bf16", "trainer-tf32", "trainer-fp32-autograd"}
    assert {k: r["precision"] for k, r in rows.items()} == {
        "notebook": "fp32", "trainer": "fp32", "trainer-bf16": "bf16", "trainer-tf32": "tf32",
        "trainer-fp32-autograd": "fp32"}
    fp32 = rows["trainer"]["samples_per_second"]
    for name in ("trainer-bf16", "trainer-tf32", "trainer-fp32-autograd"):
        assert math.isclose(rows[name]["x_fp32"], rows[name]["samples_per_second"] / fp32)
    assert rows["trainer"]["x_fp32"] is None and rows["notebook"]["x_fp32"] is None
    line = next(ln for ln in out.splitlines() if ln.startswith("precision at batch 64, norm batch: "))
    assert f"tf32 {rows['trainer-tf32']['x_fp32']:.2f}x" in line and f"bf16 {rows['trainer-bf16']['x_fp32']:.2f}x" in line
    assert "bf16 = " in line and "x fp32 on autograd" in line


@pytest.mark.parametrize("pack", ["1", "0,4", ""])
def test_a_pack_needs_two_runs(tiny_mnist, capsys, pack):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--pack", pack])
    assert e.value.code == 2 and "--pack must be integers >= 2" in capsys.readouterr().err


def test_bad_input_is_one_line_exit_2(tiny_mnist, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(tiny_args(tiny_mnist, "lr=-1"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: lr=") and "\n" not in err


def test_no_cpp_compiler_is_one_line_naming_the_way_out(tiny_mnist, capsys, no_cpp_compiler):
    with pytest.raises(SystemExit) as e:
        bench.main(tiny_args(tiny_mnist, "--batch-sizes", "16"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --compile-batches: the compiled trainer cannot run here (No working C++ compiler "
                   "found); pass --compile-batches '' to measure without it")


def test_compile_is_the_benchs_flag_not_an_override(tiny_mnist, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(tiny_args(tiny_mnist, "compile=true"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: compile=true is not allowed here") and "--compile-batches" in err
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--batch-sizes", "8,64", "--compile-batches", "512"])
    assert e.value.code == 2 and "--compile-batches must be among --batch-sizes" in capsys.readouterr().err


def test_the_notebook_pipeline_sees_the_trainers_inputs(tiny_mnist):
    """The notebook baseline scales pixels as the notebook did, Normalize((0.5,), (0.5,)),
    which is the trainer's default (data.normalize=notebook): both train on the same numbers."""
    import torch

    from study.data import load_mnist

    trainer_x = load_mnist(tiny_mnist, val_size=0, verify=False).train_x  # all images, in file order
    dataset = notebook_dataset(tiny_mnist)
    for i in (0, 1, 599):
        assert torch.allclose(dataset[i][0].reshape(-1), trainer_x[i], atol=1e-6)


def check_rows(result):
    """What every row of any family must satisfy: its keys, and its ratios are those of its samples/s."""
    rows = {(r["pipeline"], r["batch_size"], r["norm"], r["runs"]): r for r in result["rows"]}
    for (pipeline, b, n, runs), r in rows.items():
        assert ROW_KEYS <= set(r) and r["samples_per_second"] > 0 and r["seconds"] > 0
        base = rows[("notebook", b, n, 1)]["samples_per_second"]
        assert math.isclose(r["x_notebook"], r["samples_per_second"] / base)
        assert math.isclose(r["fraction_of_ceiling"], r["samples_per_second"] / result["ceiling"]["samples_per_second"])
        if pipeline == "trainer-pack":  # over the same runs one after another
            seq = rows[("trainer-sequential", b, n, runs)]["samples_per_second"]
            assert math.isclose(r["x_sequential"], r["samples_per_second"] / seq)
        else:
            assert r["x_sequential"] is None
    for t in result["targets"]:
        assert t["met"] == (t["value"] <= t["target"] if t.get("at_most") else t["value"] >= t["target"])
    return rows


def test_the_conv_net_is_benchmarked_with_its_conv_flops(tiny_mnist):
    """model=cnn: the same rows (packs too), and a ceiling that counts the convolutions (channels [2, 4], head [8])."""
    result = bench.main(tiny_args(tiny_mnist, "--batch-sizes", "64", "--pack", "2", "--pack-batches", "64",
                                  "--compile-batches", "", "model=cnn", "model.channels=[2,4]", "model.hidden=[8]",
                                  "model.groups=2"))
    conv = 2 * (1 * 9) * (2 * 28 * 28) + 2 * (2 * 9) * (4 * 14 * 14)
    dense = 2 * (4 * 7 * 7) * 8 + 2 * 8 * 10
    assert result["model"]["flops_per_sample"] == 3 * (conv + dense)
    assert result["model"]["architecture"] == "cnn conv 2-4, head 784-8-10"
    rows = check_rows(result)
    assert set(rows) == {(p, 64, n, 1) for p in ("notebook", "trainer") for n in ("none", "batch")} | {
        (p, 64, n, 2) for p in ("trainer-pack", "trainer-sequential") for n in ("none", "batch")}
    # The conv net's own targets (issue 24), not the MLP's: the trainer at 3x its plain loop, a pack at 2x.
    assert {(t["name"], t["batch_size"], t["norm"], t["target"]) for t in result["targets"]} == {
        (name, 64, n, goal) for n in ("none", "batch")
        for name, goal in (("trainer_x_notebook", 3.0), ("pack_x_sequential", 2.0))}


def test_the_lstm_is_benchmarked_per_arm_against_nn_lstm(tiny_mnist, capsys):
    """model=lstm: the same columns as the other families; every arm's plain loop, trainer and packs;
    the plain arm also on nn.LSTM's fused kernel (trainer-nn-lstm), and issue 24's targets: a pack at
    batch 8 over its runs one after another, nn.LSTM over the trainer's plain arm at batch 128."""
    result = bench.main(tiny_args(tiny_mnist, "--batch-sizes", "8,128", "--pack", "2", "--pack-batches", "8",
                                  "--norms", "none,batch,layer", "model=lstm", "model.hidden=[8]"))
    out = capsys.readouterr().out
    h = 8  # 28 steps of (28 -> 4h) and (h -> 4h), then the head h -> 10
    assert result["model"]["flops_per_sample"] == 3 * (28 * 2 * (4 * h * 28 + 4 * h * h) + 2 * h * 10)
    assert result["model"]["architecture"] == "lstm 28 steps x 28 pixels, 8 units, head 8-10"
    assert result["settings"]["compile_batches"] == []  # not compiled unless asked
    norms = ("none", "batch", "layer")
    rows = check_rows(result)
    assert set(rows) == {(p, b, n, 1) for p in ("notebook", "trainer") for b in (8, 128) for n in norms} | {
        ("trainer-nn-lstm", b, "none", 1) for b in (8, 128)} | {
        (p, 8, n, 2) for p in ("trainer-pack", "trainer-sequential") for n in norms}
    assert {(t["name"], t["batch_size"], t["norm"]) for t in result["targets"]} == {
        ("pack_x_sequential", 8, n) for n in norms} | {("nn_lstm_x_trainer", 128, "none")}
    fused = next(t for t in result["targets"] if t["name"] == "nn_lstm_x_trainer")
    assert fused["at_most"] and fused["target"] == 1.5 and math.isclose(
        fused["value"], rows[("trainer-nn-lstm", 128, "none", 1)]["samples_per_second"]
        / rows[("trainer", 128, "none", 1)]["samples_per_second"])
    assert all(t["target"] == 4.0 for t in result["targets"] if t["name"] == "pack_x_sequential")
    assert "target nn_lstm_x_trainer batch 128 norm none:" in out and "(target <= 1.5x)" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("trainer-pack") and " layer " in ln)
    assert line.split()[6] == f"{rows[('trainer-pack', 8, 'layer', 2)]['x_sequential']:.2f}x"  # the x seq column


def test_the_lstm_flops_count_its_cell_in_every_arm():
    """flops_per_sample reads the cell's weights whichever network the arm builds (nn.LSTM or NormLSTM)."""
    from study.bench import bench_config, flops_per_sample

    for norm in ("none", "batch", "layer"):
        cfg = bench_config(["model=lstm", f"model.norm={norm}"])
        assert flops_per_sample(cfg) == 3 * (28 * 2 * 400 * (28 + 100) + 2 * 100 * 10), norm


def test_pack_batches_are_among_the_batch_sizes(capsys):
    assert bench.parse_args(["--batch-sizes", "64,512"]).pack_batches == []  # the default, 8, where measured
    assert bench.parse_args([]).pack_batches == [8]
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--batch-sizes", "64,512", "--pack-batches", "8"])
    assert e.value.code == 2 and "--pack-batches must be among --batch-sizes" in capsys.readouterr().err


def test_a_cell_the_config_refuses_is_refused_before_measuring(tiny_mnist, capsys):
    with pytest.raises(SystemExit) as e:  # batch_shared needs two images a batch for its statistics
        bench.main(tiny_args(tiny_mnist, "--batch-sizes", "1", "--norms", "none,batch_shared",
                             "--compile-batches", "", "--pack-batches", "", "model=lstm"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: batch_size=") and err.count("\n") == 1


def test_the_compiled_lstm_loop_gets_its_own_nn_lstm_target():
    from study.measure.bench_report import targets

    def row(pipeline, rate):
        return {"pipeline": pipeline, "batch_size": 128, "norm": "none", "samples_per_second": rate}

    out = targets("lstm", [row("trainer", 1000.0), row("trainer-nn-lstm", 1900.0), row("trainer-compiled", 1400.0)],
                  [])
    got = {t["pipeline"]: (round(t["value"], 4), t["met"]) for t in out if t["name"] == "nn_lstm_x_trainer"}
    assert got == {"trainer": (1.9, False), "trainer-compiled": (round(1900 / 1400, 4), True)}


def test_a_fraction_of_the_ceiling_target_prints_as_a_percentage():
    from study.measure.bench_report import target_line

    bn = {"name": "bn_fraction_of_ceiling", "pipeline": "trainer", "batch_size": 64, "norm": "batch",
          "value": 0.262, "target": 0.6, "met": False}
    assert target_line(bn) == "target bn_fraction_of_ceiling batch 64 norm batch: 26.2% (target >= 60%) NOT MET"
    fused = {"name": "nn_lstm_x_trainer", "pipeline": "trainer-compiled", "batch_size": 128, "norm": "none",
             "value": 1.09, "target": 1.5, "at_most": True, "met": True}
    assert target_line(fused) == "target nn_lstm_x_trainer (compiled) batch 128 norm none: 1.09x (target <= 1.5x) met"
