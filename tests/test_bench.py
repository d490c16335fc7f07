"The GSM8K benchmark (lora_lite.bench): scoring, data, masking, the synthetic set, local paper-format data, the CLI, DDP."
import json, os, stat, subprocess, sys, time, types
import pytest, torch
import lora_lite as ll
from lora_lite.bench import data, train, evaluate, report, run, cli as bench_cli

# the package's public names in one namespace (each name lives in exactly one module)
B = types.SimpleNamespace(**{k: getattr(m, k) for m in (data, train, evaluate, report, run, bench_cli) for k in m.__all__})

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def cli(*args, env=None, timeout=180):
    "Run `python -m lora_lite.bench ARGS` (what the lora-lite-bench script calls) in a fresh process."
    return subprocess.run([sys.executable, "-m", "lora_lite.bench", *map(str, args)], capture_output=True, text=True,
                          env=env or ENV, timeout=timeout)


# ---------- scoring
@pytest.mark.parametrize("text,want", [
    ("Natalia sold 48 / 2 = 24 clips.\n#### 72", "72"),
    ("#### 1,234.", "1234"), ("#### 1,234,567", "1234567"), ("the total is #### $1,234.50", "1234.5"),
    ("#### -12", "-12"), ("It is 3 - 15 = -12 degrees.\n#### -12", "-12"), ("#### 3.75", "3.75"), ("#### 18.00", "18"),
    ("#### 7 more text #### 8", "8"), ("#### 5 and then 6", "6"),        # the last number after the final ####
    ("The answer is: 18", "18"), ("10 apples, 12 pears: 22 fruits", "22"),   # no ####: the last number in the text
    ("#### none", None), ("no numbers at all", None), ("", None), ("so 3-4 is", "4"),
])
def test_extract_answer(text, want):
    assert B.extract_answer(text) == want


def test_is_correct():
    gold = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n#### 18"
    assert B.is_correct("... #### 18", gold) and B.is_correct("The answer is: 18.0", gold)
    assert not B.is_correct("#### 17", gold) and not B.is_correct("I don't know", gold)
    assert not B.is_correct("", "no number")                                # no number on either side is still wrong


# ---------- masking, padding, over-long examples
def test_prompt_masking_and_padding():
    tok = B.CharTokenizer()
    ex = B.encode_example(tok, "What is 2 + 3?", "2 + 3 = 5\n#### 5", max_len=200)
    prompt = B.PROMPT.format(question="What is 2 + 3?")
    n = len(tok.encode(prompt))
    assert ex["labels"][:n] == [-100] * n and -100 not in ex["labels"][n:]
    assert tok.decode(ex["labels"][n:]) == " 2 + 3 = 5\n#### 5" and ex["input_ids"][-1] == tok.eos_token_id
    short = B.encode_example(tok, "1?", "#### 1", 200)
    b = B.collate([ex, short], tok.pad_token_id)
    m = len(short["input_ids"])
    assert b["input_ids"].shape == (2, len(ex["input_ids"]))
    assert (b["labels"][1, m:] == -100).all() and (b["attention_mask"][1, m:] == 0).all() and (b["attention_mask"][1, :m] == 1).all()
    ids, mask = B.left_pad([[5, 6, 7], [8]], 0)                             # eval prompts: left padding
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_loss_only_on_answer_tokens():
    "Changing the prompt's labels can't change the loss: only response tokens are scored."
    tok, model = B.CharTokenizer(), B.tiny_model()
    b = B.collate([B.encode_example(tok, "2 + 2?", "#### 4", 100)], 0)
    full = B.loss_sum(model, b)
    n_resp = int((b["labels"][0, 1:] != -100).sum())
    assert n_resp == len(" #### 4") + 1                                     # response + eos
    logits = model(input_ids=b["input_ids"]).logits[0, :-1]
    keep = b["labels"][0, 1:] != -100
    ref = torch.nn.functional.cross_entropy(logits[keep].float(), b["labels"][0, 1:][keep], reduction="sum")
    torch.testing.assert_close(full, ref)


def test_overlong_examples_dropped_with_count(capsys):
    tok = B.CharTokenizer()
    rows = [{"question": "q" * k, "answer": "#### 1"} for k in (10, 500, 20, 600, 30)]
    exs, dropped = B.encode_rows(tok, rows, n=10, max_len=120)
    assert dropped == 2 and len(exs) == 3 and all(len(e["input_ids"]) <= 120 for e in exs)
    assert "dropped 2 longer than 120" in capsys.readouterr().out
    exs, dropped = B.encode_rows(tok, rows, n=1, max_len=120, verbose=False)   # stops once n examples are found
    assert len(exs) == 1 and dropped == 0


# ---------- the synthetic data set
def test_synthetic_generator_deterministic_and_correct():
    a, b = B.synth_gsm8k(200, seed=7), B.synth_gsm8k(200, seed=7)
    assert a == b and a != B.synth_gsm8k(200, seed=8)
    assert len({r["question"] for r in a}) == 200
    for r in a:                                    # every `x op y = z` step recomputed; #### N = last step's result
        assert r["answer"].count("####") == 1 and int(B.extract_answer(r["answer"])) == B.check_worked_answer(r["answer"])
    assert any(int(B.extract_answer(r["answer"])) < 0 for r in a)          # negative answers occur (temperatures)
    with pytest.raises(ValueError, match="wrong step"): B.check_worked_answer("2 * 3 = 7\n#### 7")


def test_shipped_synthetic_files_match_generator(tmp_path):
    fresh = B.write_synth(tmp_path)
    for split, (name, n, seed) in B.SYNTH.items():
        shipped = B.synth_path(split)
        assert shipped.stat().st_size < 1_000_000
        assert fresh[split].read_bytes() == shipped.read_bytes(), f"{name} differs from write_synth(); regenerate it"
        assert len(B.read_jsonl(shipped)) == n
    tr, te = ({r["question"] for r in B.read_jsonl(B.synth_path(s))} for s in ("train", "test"))
    assert not tr & te


# ---------- paper-format data from local files, through the same loaders
@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("paper_data")
    import datasets
    mm = [{"query": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
           "response": f"Tom has {i} + {i + 2} = {2 * i + 2} apples.\nThe answer is: {2 * i + 2}",
           "type": "GSM_Rephrased", "original_question": "..."} for i in range(40)]
    mm.append({"query": "x" * 2000, "response": "too long. The answer is: 1", "type": "MATH_AnsAug", "original_question": ""})
    B.write_jsonl(mm, d / "metamathqa.jsonl")
    gsm = [{"question": f"What is {i} times 3?", "answer": f"{i} * 3 = <<{i}*3={3 * i}>>{3 * i}\n#### {3 * i:,}"} for i in range(300, 310)]
    datasets.Dataset.from_list(gsm).to_parquet(str(d / "gsm8k_test.parquet"))
    return d


def test_paper_loaders_on_local_files(paper_files):
    rows = B.load_rows(paper_files / "metamathqa.jsonl")               # datasets.load_dataset("json", data_files=...)
    assert len(rows) == 41 and set(rows.column_names) >= {"query", "response"}
    sh = B.take(B.shuffled(rows, seed=0))
    assert sorted(r["query"] for r in sh) == sorted(rows["query"]) and [r["query"] for r in sh] != rows["query"]
    q, a = B.qa_pair(sh[0])
    assert q.startswith("Tom") or q.startswith("x") and a.endswith(B.extract_answer(a))
    tok = B.CharTokenizer()
    exs, dropped = B.encode_rows(tok, sh, n=100, max_len=768, verbose=False)
    assert (len(exs), dropped) == (40, 1)
    test = B.take(B.load_rows(paper_files / "gsm8k_test.parquet"), 5)
    assert len(test) == 5 and B.extract_answer(test[0]["answer"]) == "900"   # "#### 900" (commas stripped for 1,000+)
    assert B.fingerprint(test) == B.fingerprint(B.take(B.load_rows(paper_files / "gsm8k_test.parquet"), 5))
    with pytest.raises(KeyError, match="query/response"): B.qa_pair({"prompt": "?"})
    with pytest.raises(FileNotFoundError): B.load_rows(paper_files / "missing.jsonl")


def _hf_char_model(folder):
    "A tiny Qwen3 + a character-level `transformers` tokenizer saved as a local model folder (offline stand-in for the Hub model)."
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, Regex
    from transformers import PreTrainedTokenizerFast
    ct = B.CharTokenizer()
    t = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(ct.chars)}}, unk_token="<unk>"))
    t.pre_tokenizer, t.decoder = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated"), decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>").save_pretrained(folder)
    B.tiny_model().save_pretrained(folder)
    return folder


def test_paper_preset_end_to_end_on_local_model_and_data(paper_files, tmp_path):
    "The paper preset's whole path (AutoTokenizer/AutoModel by path, bf16, MetaMathQA/GSM8K schemas) minus the Hub calls."
    model_dir = _hf_char_model(tmp_path / "model")
    B.main(["--preset", "paper", "--model", str(model_dir), "--train-data", str(paper_files / "metamathqa.jsonl"),
            "--eval-data", str(paper_files / "gsm8k_test.parquet"), "--steps", "3", "--batch-size", "2", "--max-eval-samples", "3",
            "--max-new-tokens", "8", "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"])
    res = json.loads(next((tmp_path / "out").rglob("result.json")).read_text())
    assert res["preset"] == "paper" and res["config"]["dtype"] == "bfloat16" and res["config"]["lr"] == 1e-4
    assert res["adapter_config"]["r"] == 32 and res["adapter_config"]["alpha"] == 64 and res["n_eval"] == 3
    assert res["n_train_examples"] == 6 and len(res["losses"]) == 3 and res["trainable_params"] == 2 * 32 * ((128 + 128) + (128 + 64))
    assert res["config"]["max_len"] == 768 and res["config"]["max_new_tokens"] == 8


# ---------- variants, settings, quantization (in-process, few steps)
def _lra(v, preset="paper", **flags):
    s = B.Settings.build(preset, v, **flags)
    return {"lr": s.lr, "r": s.r, "alpha": s.alpha}


def test_settings_preset_variant_flags():
    "preset ⊕ the variant's class-declared `bench` ⊕ flags, for every registered variant (no table in the benchmark)."
    paper = {k: B.PRESETS["paper"][k] for k in ("lr", "r", "alpha")}
    for v, cls in ll.VARIANTS.items():
        own = {k: x for k, x in cls.bench.items() if k in paper}
        assert _lra(v) == paper | own, v                                   # whatever the class declares, nothing else
        extra = {k: x for k, x in cls.bench.items() if k not in B.Settings.__dataclass_fields__}
        assert B.adapter_fields(B.Settings.build("paper", v)).items() >= extra.items(), v   # config fields go to the adapter
        assert _lra(v, "smoke") == {"lr": 2e-2, "r": 8, "alpha": 16.0}    # smoke: one setting for every method
    assert _lra("lora") == {"lr": 1e-4, "r": 32, "alpha": 64.0}           # DESIGN §5: r=32, alpha=64 by default
    assert _lra("delora", lr=0.3, r=4) == {"lr": 0.3, "r": 4, "alpha": 64.0}   # flags win
    assert B.Settings.build("probe").r == 8 and B.Settings.build("probe").layers == (0,)   # every preset key is read
    assert B.Settings.build(clip=0.5).clip == 0.5 and B.Settings.build().clip == 1.0


def test_design_per_variant_defaults():
    "DESIGN §5's per-method learning rates and ranks, as the variants declare them on their classes."
    assert _lra("delora")["lr"] == 1e-3 and _lra("ia3")["lr"] == 5e-3 and _lra("ia3_ff")["lr"] == 5e-3
    for v in ["antipasto", "antipasto_corda", "antipasto_rot", "antipasto_ablate", "antipasto_arrow"]:
        assert _lra(v) == {"lr": 5e-3, "r": 256, "alpha": 64.0}, v


def test_variant_bench_with_unknown_key_is_refused(monkeypatch):
    monkeypatch.setattr(ll.VARIANTS["lora"], "bench", {"lr": 1e-3, "learning_rate": 1})
    with pytest.raises(ValueError, match="neither benchmark settings"): B.Settings.build("paper", "lora")


def _quick(tmp_path, *args):
    B.main(["--out", str(tmp_path), "--steps", "2", "--max-eval-samples", "2", "--max-new-tokens", "4", "--no-progress", *args])
    return [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("result.json"))]


def test_ia3_keeps_its_targets_calibrated_variants_get_data(tmp_path):
    res = {r["variant"]: r for r in _quick(tmp_path, "--variant", "ia3,eva")}
    assert {tuple(res["ia3"]["adapter_config"]["target_names"])} == {tuple(ll.get_config("ia3").target_names)}
    assert res["eva"]["trainable_params"] > 0 and res["eva"]["n_targets"] == 4
    res = _quick(tmp_path / "t", "--variant", "ia3", "--targets", "q_proj", "--lr", "0.1", "--r", "4")
    assert res[0]["adapter_config"]["target_names"] == ["q_proj"] and res[0]["config"]["lr"] == 0.1 and res[0]["adapter_config"]["r"] == 4


def test_quantized_smoke_4bit(tmp_path):
    pytest.importorskip("bitsandbytes")
    res = _quick(tmp_path, "--quant", "4bit", "--steps", "6", "--warmup", "0")[0]
    assert res["run_id"].endswith("_4bit") and res["trainable_params"] == 7168 and res["losses"][-1] < res["losses"][0]
    assert res["eval_merged"] is False and "4-bit" in res["eval_merged_why"]               # a 4-bit base generates hooked
    assert res["gen_speed"]["merged_tokens_per_s"] is None and res["gen_speed"]["hooked_tokens_per_s"] > 0


# ---------- the command line, end to end
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    t = time.perf_counter()
    p = cli("--out", out, "--steps", "40", "--max-eval-samples", "10", "--max-new-tokens", "40", "--no-progress")
    assert p.returncode == 0, p.stderr[-3000:]
    return out, p, time.perf_counter() - t


def test_cli_smoke_run(smoke_run):
    out, p, secs = smoke_run
    f, = out.rglob("result.json")
    res = json.loads(f.read_text())
    for k in ["config", "accuracy", "n_eval", "trainable_params", "peak_mem_bytes", "peak_mem_kind", "train_s", "eval_s",
              "tokens_per_s", "lora_lite_version", "git_commit", "data_fingerprints", "samples", "losses"]:
        assert k in res, k
    assert res["variant"] == "lora" and res["preset"] == "smoke" and res["n_eval"] == 10 and res["trainable_params"] == 7168
    assert res["peak_mem_kind"] == "process_peak_rss" and res["peak_mem_bytes"] > 10e6 and res["tokens_per_s"] > 0
    assert res["lora_lite_version"] == ll.__version__ and len(res["data_fingerprints"]["train"]) == 64
    assert res["loss_last"] < res["loss_first"] - 0.3, res["losses"]        # training works
    assert len(res["samples"]) == 3 and {"generation", "pred", "gold", "correct"} <= set(res["samples"][0])
    assert "GSM8K" in p.stdout and not list(out.rglob(".*tmp*"))            # no temp files left behind
    assert res["reload_max_diff"] == 0.0 and res["adapter_effect"] > 0 and res["eval_tokens_per_s"] > 0 and res["eval_gen_tokens"] > 0
    assert "world size 1 (one process)" in p.stdout
    assert res["eval_merged"] is True and res["eval_merged_why"] is None                # evaluation ran on ll.merged weights
    sp = res["gen_speed"]
    assert sp["hooked_tokens_per_s"] > 0 and sp["merged_tokens_per_s"] > 0 and sp["merged_why"] is None
    assert "~0% is expected here" in p.stdout and f"OK: the training loss fell from {res['loss_first']:.2f} to {res['loss_last']:.2f}" in p.stdout
    assert "reloads exactly" in p.stdout and f"Next: `lora-lite-bench --report {out}`" in p.stdout and "--preset paper" in p.stdout
    umask = os.umask(0); os.umask(umask)
    for f in out.rglob("*.*"): assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f      # 0644, not mkstemp's 0600
    model = B.tiny_model()                                                  # the adapter reloads
    cfg = ll.load(model, f.parent / "adapter.safetensors")
    assert cfg.variant == "lora" and cfg.r == 8 and sum(p.numel() for p in model.parameters() if p.requires_grad) == 7168


def test_cli_report(smoke_run, tmp_path, capsys):
    out, _, _ = smoke_run
    assert B.main(["--variant", "none", "--out", str(out), "--max-eval-samples", "3", "--max-new-tokens", "5", "--no-progress"]) == 0
    capsys.readouterr()
    assert B.main(["--report", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = [l for l in printed.splitlines() if l.startswith("|")]
    assert lines[0].startswith("| Variant | GSM8K % | Params | Peak mem") and len(lines) == 4
    assert f"wrote {out / 'report.md'}, {out / 'pareto.png'}" in printed
    assert any(l.startswith("| lora | ") and "| 7.17K |" in l for l in lines) and any(l.startswith("| none | 0.0% | 0 |") for l in lines)
    assert (out / "report.md").read_text().splitlines()[0] == lines[0] and (out / "pareto.png").stat().st_size > 1000
    assert B.main(["--report", str(tmp_path)]) == 2 and "no result.json" in capsys.readouterr().err


def test_cli_unknown_variant(capsys):
    code = B.main(["--variant", "lora,nope"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown variant 'nope'" in err and "known variants: " in err and "lora" in err


def test_cli_paper_offline_fails_fast(tmp_path):
    t = time.perf_counter()
    p = cli("--preset", "paper", "--out", tmp_path, env={**ENV, "HF_HOME": str(tmp_path / "hf")})   # empty cache
    assert p.returncode == 2 and "couldn't fetch" in p.stderr and "--model PATH" in p.stderr, p.stderr[-2000:]
    assert time.perf_counter() - t < 60 and not list(tmp_path.rglob("result.json"))


# ---------- data parallel: 2 CPU processes (gloo) == 1 process with the same global batch
def test_ddp_two_processes_match_one(tmp_path):
    args = ["--steps", "3", "--batch-size", "4", "--max-eval-samples", "4", "--max-new-tokens", "4", "--no-progress"]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lora_lite.bench", "--out", str(tmp_path / "ddp"), *args], capture_output=True, text=True, env=ENV, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert B.main(["--out", str(tmp_path / "one"), *args]) == 0
    (fd,), (f1,) = list((tmp_path / "ddp").rglob("result.json")), list((tmp_path / "one").rglob("result.json"))
    rd, r1 = json.loads(fd.read_text()), json.loads(f1.read_text())
    assert "world size 2 (2 processes, data-parallel (DDP))" in ddp.stdout and "warning" not in ddp.stderr
    assert rd["world_size"] == 2 and r1["world_size"] == 1 and rd["ddp_rank_max_diff"] == 0.0   # ranks identical
    assert rd["n_eval"] == 4 and len(list((tmp_path / "ddp").rglob("result.json"))) == 1      # eval sharded, rank 0 writes
    _, td = ll.read_adapter(fd.parent / "adapter.safetensors")
    _, t1 = ll.read_adapter(f1.parent / "adapter.safetensors")
    assert td.keys() == t1.keys() and max((td[k] - t1[k]).abs().max().item() for k in td) <= 1e-5
    assert max(abs(a - b) for a, b in zip(rd["losses"], r1["losses"])) <= 1e-5


# ---------- sharded: `accelerate launch` with an FSDP config, 2 CPU processes == 1 process with the same global batch
ACCEL_FSDP = ["-m", "accelerate.commands.launch", "--use_fsdp", "--fsdp_version", "2", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lora_lite.bench"]

@pytest.mark.parametrize("variant,more", [("lora", []), ("oft", []), ("lora", ["--quant", "4bit"])],
                         ids=["lora", "oft", "qlora"])   # an output hook; an input pre-hook with a cached rotation; nf4 base
def test_fsdp_under_accelerate_launch_matches_one(tmp_path, variant, more):
    if more: pytest.importorskip("bitsandbytes")
    args = [*more, "--variant", variant, "--steps", "3", "--batch-size", "4", "--max-eval-samples", "5", "--max-new-tokens", "6", "--no-progress"]
    env = {**ENV, "ACCELERATE_LOG_LEVEL": "error"}
    sh = subprocess.run([sys.executable, *ACCEL_FSDP, "--out", str(tmp_path / "fsdp"), *args], capture_output=True, text=True, env=env, timeout=300)
    assert sh.returncode == 0, sh.stdout[-2000:] + sh.stderr[-4000:]
    assert "world size 2 (2 processes, sharded with FSDP2)" in sh.stdout, sh.stdout
    assert B.main(["--out", str(tmp_path / "one"), *args]) == 0
    (fs,), (f1,) = list((tmp_path / "fsdp").rglob("result.json")), list((tmp_path / "one").rglob("result.json"))
    rs, r1 = json.loads(fs.read_text()), json.loads(f1.read_text())
    assert rs["fsdp"] is True and rs["world_size"] == 2 and r1["fsdp"] is False
    assert rs["reload_max_diff"] == 0.0 and rs["adapter_effect"] > 0          # the file == the gathered live adapter
    assert rs["n_eval"] == 5 and rs["trainable_params"] == r1["trainable_params"]   # 5 rows on 2 ranks: one rank has a dummy batch
    _, ts = ll.read_adapter(fs.parent / "adapter.safetensors")
    _, t1 = ll.read_adapter(f1.parent / "adapter.safetensors")
    assert all(type(t) is torch.Tensor for t in ts.values())
    assert ts.keys() == t1.keys() and max((ts[k] - t1[k]).abs().max().item() for k in ts) <= 1e-5
    assert max(abs(a - b) for a, b in zip(rs["losses"], r1["losses"])) <= 1e-5
    assert [s["generation"] for s in rs["samples"]] == [s["generation"] for s in r1["samples"]]


def test_fsdp_flag_refuses_8bit_and_warns_on_one_process(tmp_path, capsys):
    assert B.main(["--fsdp", "--quant", "8bit", "--out", str(tmp_path)]) == 2
    assert "--quant 8bit can't be sharded by FSDP" in capsys.readouterr().err
    line, warn = B.world_line(1, None, "cpu", fsdp=True)
    assert "one process" in line and "not sharded" in warn


def test_batched_left_padded_generation_matches_one_by_one():
    "Prompts of different lengths, left-padded in one batch, generate exactly what they generate alone."
    tok, model = B.CharTokenizer(), B.tiny_model()
    ll.attach(model, ll.LoRAConfig(r=8, alpha=16))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.add_(0.3 * torch.randn(p.shape, generator=g))
    rows = B.read_jsonl(B.synth_path("test"))[:6]
    assert len({len(r["question"]) for r in rows}) > 1
    a = B.evaluate(model, tok, rows, batch_size=6, max_new_tokens=16, progress=False, n_samples=6, sort=False, stop=False)
    b = B.evaluate(model, tok, rows, batch_size=1, max_new_tokens=16, progress=False, n_samples=6, sort=False, stop=False)
    assert [s["generation"] for s in a["samples"]] == [s["generation"] for s in b["samples"]]
    assert a["n_eval"] == 6 and [s["gold"] for s in a["samples"]] == [B.extract_answer(r["answer"]) for r in rows]


def test_variant_that_cannot_attach_stops_before_training(tmp_path, capsys):
    "--variant a,b: a variant whose config the model can't take is a usage error before any training (exit code 2)."
    code = B.main(["--variant", "hra,lora", "--r", "3", "--out", str(tmp_path), "--steps", "1", "--max-eval-samples", "1",
                   "--max-new-tokens", "2", "--no-progress"])          # HRA needs an even r
    err = capsys.readouterr().err
    assert code == 2 and "--variant hra:" in err and "Traceback" not in err and not list(tmp_path.rglob("result.json"))


# ---------- qwen-probe (the probe preset): a real model's block 0, a few steps, save, reload, compare
def test_probe_on_local_model(paper_files, tmp_path, capsys):
    model_dir = _hf_char_model(tmp_path / "model")
    code = B.main(["--preset", "probe", "--model", str(model_dir), "--train-data", str(paper_files / "metamathqa.jsonl"),
                   "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0 and "OK" in out and "2 modules" in out, out        # block 0's q_proj and v_proj only
    assert list((tmp_path / "out").rglob("adapter.safetensors"))


def test_probe_offline_fails_fast(tmp_path):
    p = cli("--preset", "probe", "--out", tmp_path, env={**ENV, "HF_HOME": str(tmp_path / "hf")})
    assert p.returncode == 2 and "couldn't fetch the model 'Qwen/Qwen3-0.6B-Base'" in p.stderr and "--model PATH" in p.stderr, p.stderr[-2000:]


def test_the_cosine_schedule_is_transformers_one():
    "bench.train.cosine_schedule (written out so the benchmark doesn't import bitsandbytes through PEFT) == transformers'."
    from transformers import get_cosine_schedule_with_warmup
    from lora_lite.bench.train import cosine_schedule
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    for warmup, steps in [(2, 6), (0, 150), (10, 150), (0, 1), (7, 5000), (150, 150)]:
        ours, theirs = cosine_schedule(opt, warmup, steps).lr_lambdas[0], get_cosine_schedule_with_warmup(opt, warmup, steps).lr_lambdas[0]
        assert max(abs(ours(s) - theirs(s)) for s in range(steps + 2)) < 1e-12, (warmup, steps)
