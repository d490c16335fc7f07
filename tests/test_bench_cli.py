"""lora-lite-bench's edges: validation before training (exit 2, no traceback), --help, --plugin, a missing extra,
no bitsandbytes unless asked for, the world-size warning, the report's plot, and evaluation that stops at the answer."""
import json, os, subprocess, sys, textwrap
import pytest, torch
import lora_lite as ll
from lora_lite.bench import cli, data, evaluate, report, train

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
QUICK = ["--steps", "2", "--max-eval-samples", "2", "--max-new-tokens", "4", "--no-progress"]


def py(code, *args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


# ---------- validation: a usage error before anything is trained, exit code 2, no traceback
@pytest.mark.parametrize("args,msg", [
    (["--steps", "-5"], "--steps must be an integer >= 1 (got -5)"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1 (got 0)"),
    (["--r", "0"], "--r must be an integer >= 1 (got 0)"),
    (["--lr", "-1"], "--lr must be > 0 (got -1.0)"),
    (["--max-eval-samples", "0"], "--max-eval-samples must be an integer >= 1 (got 0)"),
    (["--clip", "0"], "--clip must be > 0"),
    (["--targets", "nomatch"], "--variant lora: LoRAConfig: no linear module matches target_names=['nomatch']"),
    (["--variant", "nope"], "unknown variant 'nope'; known variants:"),
    (["--plugin", "no_such_plugin_module"], "--plugin no_such_plugin_module: ModuleNotFoundError"),
])
def test_validation_errors(args, msg, tmp_path, capsys):
    code = cli.main(["--out", str(tmp_path), *QUICK, *args])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and err.startswith("usage: lora-lite-bench") and "Traceback" not in err, err
    assert not list(tmp_path.rglob("result.json"))


def test_out_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "runs"; f.write_text("not a folder")
    assert cli.main(["--out", str(f / "sub"), *QUICK]) == 2
    assert f"{f} is a file, not a folder" in capsys.readouterr().err


def test_help_lists_defaults_variants_presets_sources(monkeypatch):
    monkeypatch.setenv("COLUMNS", "500")                                   # no line wrapping
    h = cli.parser().format_help()
    for want in ["(default: smoke)", "(default: lora)", "(default: runs)", "preset: paper 5000 · smoke 150 · probe 3",
                 "--plugin MODULE", "synth:train", "meta-math/MetaMathQA", ".jsonl/.parquet", "presets: smoke", "probe ="]:
        assert want in h, want
    assert ", ".join(sorted(ll.VARIANTS)) in h                          # the registry, not a list in the benchmark
    for a in cli.parser()._actions: assert a.help, a.dest                  # help on every flag


# ---------- --plugin: a method defined outside the package runs in the benchmark
PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar
import lora_lite as ll

@dataclass(frozen=True)
class MyLoRAConfig(ll.LoRAConfig):
    variant: ClassVar[str] = "my_lora"

@ll.register
class MyLoRA(ll.LoRA):
    config_cls = MyLoRAConfig
    bench = {"lr": 3e-3, "r": 4}

@dataclass(frozen=True)
class BrokenConfig(ll.LoRAConfig):
    variant: ClassVar[str] = "broken"

@ll.register
class Broken(ll.LoRA):
    config_cls = BrokenConfig
    def init(self, module): raise RuntimeError("broken on purpose")
'''


def test_plugin_registers_a_variant_that_runs(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    p = subprocess.run([sys.executable, "-m", "lora_lite.bench", "--plugin", tmp_path / "my_plugin.py", "--variant", "broken,my_lora",
                        "--out", tmp_path / "out", *QUICK], capture_output=True, text=True, env=ENV, timeout=240)
    assert p.returncode == 1 and "broken on purpose" in p.stderr and "failed: broken" in p.stderr, p.stderr[-2000:]
    (f,) = (tmp_path / "out").rglob("result.json")                      # the failing variant did not stop the other one
    res = json.loads(f.read_text())
    assert res["variant"] == "my_lora" and res["run_id"].startswith("my_lora__") and res["reload_max_diff"] == 0.0
    assert "| my_lora |" in p.stdout and "wrote" in p.stdout                # the multi-variant report
    # a dotted module name works too, and the paper preset reads the plugin class's own defaults
    q = py("""
        import sys; sys.path.insert(0, sys.argv[1])
        from lora_lite.bench import cli, run
        cli.load_plugin("my_plugin")
        s = run.Settings.build("paper", "my_lora"); print(s.lr, s.r, s.alpha)
        """, tmp_path)
    assert q.stdout.split() == ["0.003", "4", "64.0"], q.stderr[-2000:]


# ---------- without the bench extra; bitsandbytes only when asked for; the world-size warning
BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "transformers": raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from lora_lite.bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_missing_bench_extra_says_what_to_install(tmp_path):
    p = py(BLOCK, "--out", tmp_path, *QUICK)
    assert p.returncode == 2 and 'pip install "lora_lite[bench]"' in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert py(BLOCK, "--help").returncode == 0                            # --help needs no extra


def test_no_bitsandbytes_and_world_size_warning(tmp_path):
    p = py("""
        import sys
        from lora_lite.bench.cli import main
        code = main(sys.argv[1:])
        print("bitsandbytes imported:", "bitsandbytes" in sys.modules); sys.exit(code)
        """, "--out", tmp_path, *QUICK, env={**ENV, "MASTER_ADDR": "127.0.0.1"})   # what `accelerate launch --num_processes 2` leaves on a CPU
    assert p.returncode == 0, p.stderr[-2000:]
    assert "bitsandbytes imported: False" in p.stdout and "gemm_4bit" not in p.stderr
    assert "world size 1 (one process)" in p.stdout
    assert "warning: `accelerate launch` was asked for several processes but this run has 1" in p.stderr and "--multi_gpu" in p.stderr


# ---------- the report: frontier, labels that don't collide, smoke runs plot the loss
def _fake(n=14, preset="paper"):
    params = [14336, 14336, 14400, 17536, 35840, 57344, 86016, 1835008, 4587520, 4587520, 4587520, 4587520, 4673536, 200000]
    return [{"variant": f"variant_{i:02d}", "model": "m", "preset": preset, "trainable_params": params[i % 14],
             "accuracy": 0.60 + 0.002 * (i % 5), "n_eval": 1319, "losses": [3.0, 1.0 + 0.01 * i], "loss_first": 3.0,
             "loss_last": 1.0 + 0.01 * i, "peak_mem_gb": 1.0, "train_s": 1.0, "eval_s": 1.0, "steps": 5} for i in range(n)]


@pytest.mark.parametrize("preset", ["paper", "smoke"])
def test_pareto_labels_do_not_overlap(preset):
    fig, ax, texts = report.pareto_figure(_fake(preset=preset))
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in texts]
    assert len(texts) == 14 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert ax.get_title() and "trainable parameters" in ax.get_xlabel() and ax.get_xscale() == "log"
    assert ("loss" in ax.get_ylabel()) == (preset == "smoke")            # smoke runs plot what moved
    assert any(l.get_label() == "Pareto frontier" for l in ax.get_lines())


def test_pareto_front():
    assert report.pareto_front([1, 2, 3, 4], [5, 4, 6, 6]) == [0, 2]
    assert report.pareto_front([10, 10, 20], [1.0, 2.0, 3.0]) == [1, 2]    # same x: the better one only
    assert report.pareto_front([1, 2, 3], [3.0, 2.0, 2.5], higher=False) == [0, 1]


# ---------- evaluation: sorted batches that stop at the answer give the answers of the plain path
def _answer_then_chatter_model():
    "The smoke model trained (all weights) to answer every question with a worked line, `#### N`, and then chatter."
    tok, model = data.CharTokenizer(), train.tiny_model()
    rows = [{"question": r["question"], "answer": "2 + 5 = 7\n#### 7\nThe end. More words follow here."}
            for r in data.read_jsonl(data.synth_path("train"))[:64]]
    exs, _ = data.encode_rows(tok, rows, 64, 400, verbose=False)
    for p in model.parameters(): p.requires_grad_(True)
    train.train(model, exs, steps=60, batch_size=8, lr=1e-2, pad_id=0, warmup=0, progress=False)
    return tok, model


def test_sorted_stopped_evaluation_matches_plain_one_by_one():
    torch.manual_seed(0); torch.set_num_threads(1)
    tok, model = _answer_then_chatter_model()
    rows = data.read_jsonl(data.synth_path("test"))[:8]
    fast = evaluate.evaluate(model, tok, rows, batch_size=4, max_new_tokens=48, progress=False, n_samples=8)
    slow = evaluate.evaluate(model, tok, rows, batch_size=1, max_new_tokens=48, progress=False, n_samples=8, sort=False, stop=False)
    assert fast["predictions"] == slow["predictions"] and fast["predictions"].count("7") >= 4, (fast["samples"], slow["samples"])
    stopped = [s for s in fast["samples"] if s["generation"].endswith("#### 7\n")]
    assert stopped and all("The end" in s["generation"] for s in slow["samples"] if s["pred"] == "7")   # the plain path chattered on
    assert fast["gen_tokens"] < slow["gen_tokens"] and [s["i"] for s in fast["samples"]] == list(range(8))


def test_stop_at_answer_is_per_sequence():
    tok, stop = data.CharTokenizer(), None
    stop = evaluate.StopAtAnswer(tok)
    text = "So 4\n#### 5\nQuestion"
    flags = [stop(torch.tensor([tok.encode(c), tok.encode("x")]))[0].item() for c in text]
    assert flags.index(True) == len("So 4\n#### 5") and stop.done.tolist() == [True, False]
