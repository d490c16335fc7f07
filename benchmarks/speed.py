"""lora_lite vs PEFT, side by side in one process: training-step time, peak memory, SVD-init time, graph breaks.

    python benchmarks/speed.py                 # the documented CPU run (~6-8 min on a 2-core CPU), writes results/speed_cpu.json
    python benchmarks/speed.py --quick         # a fast smoke run (~1 min), smaller model, fewer repeats
    python benchmarks/speed.py --device cuda   # on a GPU (writes results/speed_cuda.json)
    python benchmarks/speed.py --decode-only   # only the decode section (~15 min alone on a 2-core CPU), merged into the JSON
    python benchmarks/speed.py --decode-only --only lora hira --update benchmarks/results/speed_cpu.json   # re-measure decode rows
    python benchmarks/speed.py --only fourierft lora --skip memory init breaks decode   # a subset (writes speed_cpu_partial.json)
    python benchmarks/speed.py --skip step flops layer init breaks decode --update benchmarks/results/speed_cpu.json   # memory only

Configurations come from the registry, nothing here lists methods: every registered variant is timed with the GSM8K
paper preset's adapter config (`--config bench`: r=32, α=64 ⊕ the variant's `bench`; or `default` / `example`), falling
back to the config's defaults and then to the variant's `example` where that does not fit the model; every variant with
a `peft_type` gets a PEFT side, built from lora_lite's own adapter by `ll.to_peft` and `PeftModel.from_pretrained`
(the same tensors), so a method added later is compared with PEFT without editing this file.

Method
- Step model: a random Qwen3 built from a config (default hidden 512, 8 blocks, 8 heads × 64, 4 KV heads,
  MLP 1536, vocab 4096, batch 2 × seq 256, fp32). Every configuration gets its own copy of the same weights.
  (Batch 2, not 4, so that the 19 configurations × 10 steps, the memory subprocesses and the init timing fit in
  10 minutes on one thread; the ratios hardly depend on the batch, the FLOP prediction not at all.)
- Threads and clock: on CPU we default to `torch.set_num_threads(1)` and time each step by the process' CPU time
  (`time.process_time`). The development machine has 2 cores shared with other jobs; with 2 threads a step
  slowed down up to 20× whenever another process took a core (the threads wait for each other), while one
  thread's CPU time only counts work this process did. `--threads 2 --clock wall` measures the other way.
  On GPU the clock is wall time with `torch.cuda.synchronize()`.
- A "step" = forward + LM loss + backward + AdamW step (+ zero_grad). The input embeddings are a leaf that
  requires grad in every configuration, so the frozen base ("base") has a full backward to its input; the
  adapters add their own compute plus the weight gradients and the optimizer step of their parameters.
- Timing is interleaved: each round runs one step of every configuration (order rotated each round), after
  warm-up steps; we report the median over rounds (>= 9). A step-time ratio A ÷ B is the median over rounds of
  (A's step ÷ B's step in that round): paired, so a slow drift of the machine's speed cancels.
- Step memory: one subprocess per configuration (same sizes): the base model is built, then the adapter is attached and
  3 steps run (2 warm-up + the measured one). On CPU the measure is exact (`profiled_memory`): under torch's profiler
  with `profile_memory=True` the CPU allocator reports every allocation and free, with the running total of live bytes
  allocated since profiling began (from just after the base model is built). "Step memory" = that total's maximum
  over the measured step: every tensor byte live at the step's peak that the adapter and the steps allocated
  (activations and saved tensors, gradients, temporaries, adapter tensors, optimizer state, the batch); not the
  allocator's caching, Python objects or code, nor the base's weights. The same code gives the same bytes on every run
  (the peak RSS used before wandered ~1 MB between identical runs, which hid ratios within 0.3 % of 1). "Peak" = step
  memory + the base model's tensors. On GPU: `torch.cuda.max_memory_allocated`, step = that minus the memory allocated
  just after the base model is built. Each adapted worker first runs the PEFT export/import path on a throwaway
  64-wide model, so both sides have imported the same code before the measure starts.
- Prediction of the hook overhead: matmul/attention FLOPs of one step counted by torch's FlopCounterMode
  (batch 1; the ratio does not depend on the batch), adapter ÷ base.
- Init: attach time of the SVD-based variants on Qwen3-0.6B-sized layers (q_proj 1024->2048, v_proj 1024->1024,
  `--init-blocks` blocks), lora_lite vs PEFT with the same SVD method (full `torch.linalg.svd` / `svd_lowrank`
  with niter=4), interleaved, median over `--init-repeats`.
- Graph breaks: `torch._dynamo.explain` on a 2-block copy of the step model (dynamo only, no compilation).
- The hook path alone: one q_proj-sized layer with LoRA, forward + backward on the same tokens, lora_lite's hook
  vs PEFT's wrapper module, 40 paired rounds: a precise check of the per-layer cost that the whole-model step
  (±2-3 % round-to-round noise on a shared CPU) can't resolve.
- Decode: every registered lora_lite variant (its `--config`), the same adapter inside `ll.merged` (W + ΔW swapped in,
  hooks off: the "merged" column), and PEFT where it has the method, on a Qwen3 with Qwen3-0.6B's block widths, 2 blocks, vocab 4096 (`DEC`), eval mode,
  each adapter moved a small seeded step off its init (as after training; PEFT's rows load that same adapter):
  batch-1 decode after an 8-token prompt, under inference_mode: per round, each row's 24 tokens are timed one by one, each
  between two tokens of the frozen base (b, k, b, k, ..., b; one token = the forward of one new token on the prompt's KV
  cache), and the round's ratio is the row's 24 tokens ÷ the mean of the base's before and after. Token pairs ~10 ms apart
  cancel the drift that whole-`generate` pairs could not: the base's per-token time wanders 8-17 ms here (the decode
  model's weights fit this CPU's L3, which other jobs share). A greedy `generate` per row checks its tokens. Plus one
  batch 8 × 128 prefill forward per row (whole-call pairs). CPU time; medians of the paired ratios. Every lora_lite row
  runs `--decode-repeats` rounds, then rounds go on (up to `--decode-max`) for the rows whose quartiles are not yet within
  ±3 % of their median ("steady"); PEFT's rows (context, not a goal) run `--peft-repeats` rounds, and a configuration
  ≥ 3× the base (PEFT's HRA) 2 rounds only. Each lora_lite row has its weight-traffic floor (`checks.decode_floor`:
  1 + the numbers the adapter must read per token ÷ the base's), the goal being hooked ≤ 1.03 × floor and merged ≤ 1.01 ×
  base. A control row, "copy" (the lora_lite rows' own weights with no adapter), is timed every round like a row: the
  two copies of the weights sit in different memory and one can run a steady 1-2 % faster than the other for a whole
  run, so the goals divide by the copy's ratio (`decode_over_copy`), i.e. compare each row with the same computation on
  the same weights. Each merged row also records what entering `ll.merged` once cost (`merge_ms`: W + ΔW for every
  adapted layer, CPU time), the price of each switch in a loop that generates between training steps. Each run records
  its machine (`machine()`: CPU model, cores, cache sizes). Where the L3 holds both copies of the 2-block model's weights
  (it says so), `--decode-blocks 6` streams them from memory again, with quartiles of ±0.2 % (2026-12-04, 480 MB L3;
  benchmarks/results/speed_cpu_decode6.json); such a run is a file of its own. Variants that fail to attach are listed, not fatal.
"""
from __future__ import annotations
import argparse, copy, gc, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import warnings
warnings.filterwarnings("ignore")
import torch

R, ALPHA, AP_R = 32, 64, 256          # LoRA rank/alpha of the hook-path and init sections; AntiPaSTO's rank there
QV = ["q_proj", "v_proj"]

# ------------------------------------------------------------------ configurations, from the registry
# Nothing here lists methods: every registered variant is timed, and every variant with a `peft_type` gets a PEFT side,
# built from lora_lite's own adapter by `ll.to_peft` and loaded with `PeftModel.from_pretrained` (same tensors).
def variants(args) -> list:
    import lora_lite as ll
    return [v for v in sorted(ll.VARIANTS) if not args.only or v in args.only]

def has_peft(v) -> bool:
    import lora_lite as ll
    return ll.VARIANTS[v].peft_type is not None

def configs_to_try(v, args) -> list:
    "[(which, config fields)] for variant v: the --config choice first, then the variant's defaults, then its `example`."
    import dataclasses, lora_lite as ll
    from lora_lite.bench.run import Settings, adapter_fields
    V = ll.VARIANTS[v]
    known = {f.name for f in dataclasses.fields(V.config_cls)}
    opts = {"bench": {k: x for k, x in adapter_fields(Settings.build("paper", v)).items() if k in known},   # the GSM8K paper preset
            "default": {}, "example": dict(V.example)}
    order = [args.config] + [c for c in ("default", "example") if c != args.config]
    return [(c, opts[c]) for c in order if c != "example" or V.example]

def attach_ll(model, v, args, calib=None, moved=False) -> tuple:
    """Attach variant v with the first config of `configs_to_try` that fits `model`; returns (which, config). `moved`: every
    trainable adapter tensor then gets a small seeded step off its init, as after training (a method that skips its work at
    init, OSF, would otherwise be timed doing nothing)."""
    import lora_lite as ll
    V, errors = ll.VARIANTS[v], []
    for which, fields in configs_to_try(v, args):
        try:
            cfg = ll.get_config(v, **fields)
            torch.manual_seed(0)                                        # the same adapter init in every copy
            ll.attach(model, cfg, calibration_data=calib if V.needs_calibration else None)
            if moved: move_off_init(model)
            return which, cfg
        except (ValueError, TypeError) as e: errors.append(f"{which}: {str(e).splitlines()[0][:160]}")
    raise ValueError(f"{v}: no config fits this model: " + " | ".join(errors))

def move_off_init(model, std=1e-3):
    "Add seeded noise (std `std`) to every trainable tensor of `model`'s adapter, in place."
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad: p.add_(std * torch.randn(p.shape, generator=g).to(p.dtype))

def attach_peft(model, v, args, calib=None, moved=False):
    "PEFT's side of v: lora_lite's adapter written by `ll.to_peft`, detached, loaded by `PeftModel.from_pretrained` (trainable)."
    import tempfile, lora_lite as ll, peft
    which, cfg = attach_ll(model, v, args, calib, moved)
    with tempfile.TemporaryDirectory() as d:
        ll.to_peft(model, Path(d) / "peft")
        ll.detach(model)
        return peft.PeftModel.from_pretrained(model, Path(d) / "peft", is_trainable=True), (which, cfg)

def run_keys(args):
    "Configuration keys of the step benchmark: 'base', 'll:<variant>', 'peft:<variant>'."
    keys = ["base"]
    for v in variants(args):
        keys.append(f"ll:{v}")
        if has_peft(v) and not args.no_peft: keys.append(f"peft:{v}")
    return keys

# ------------------------------------------------------------------ models
def qwen3(hidden, layers, vocab, seq, inter=None, heads=None, kv=None, head_dim=64, seed=0):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(seed)
    heads = heads or hidden // head_dim
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter or 3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv or max(1, heads // 2), head_dim=head_dim,
                      max_position_embeddings=max(seq, 128), tie_word_embeddings=False, attention_dropout=0.0)
    cfg._attn_implementation = "sdpa"
    return Qwen3ForCausalLM(cfg)

def step_model(args, layers=None):
    return qwen3(args.hidden, layers or args.layers, args.vocab, args.seq).to(args.device)

def calib_batches(vocab, seed=4):
    "Token batches for the data-calibrated variants (EVA, antipasto_corda)."
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (2, 64), generator=g) for _ in range(2)]

CONFIGS = {}   # variant -> (which config, its fields) as attached, for the report
FAILED = {}    # configuration key -> why it could not be built

def adapt(model, key, args):
    "Attach configuration `key` to `model`; returns (model to call, trainable params)."
    if key == "base": return model.requires_grad_(False), []   # frozen base: gradients flow to the input only
    lib, v = key.split(":")
    calib = [b.to(args.device) for b in calib_batches(args.vocab)]
    if lib == "ll": used = attach_ll(model, v, args, calib)
    else: model, used = attach_peft(model, v, args, calib)
    CONFIGS[v] = (used[0], used[1].to_dict())
    return model, [p for p in model.parameters() if p.requires_grad]

class Runner:
    "One configuration: its model copy, optimizer and fixed batch; `step()` does fwd + bwd + AdamW step."
    def __init__(self, key, base, args, batch=None, copy_base=True):
        self.key, self.dev = key, args.device
        self.model, params = adapt(copy.deepcopy(base) if copy_base else base, key, args)
        self.model.train()
        self.opt = torch.optim.AdamW(params, lr=1e-4) if params else None
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, args.vocab, (batch or args.batch, args.seq), generator=g).to(self.dev)
        self.ids, self.emb = ids, base.get_input_embeddings()(ids).detach()

    def step(self):
        x = self.emb.clone().requires_grad_()
        loss = self.model(inputs_embeds=x, labels=self.ids).loss
        loss.backward()
        if self.opt is not None: self.opt.step(); self.opt.zero_grad(set_to_none=True)
        return loss

def sync(dev):
    if dev.startswith("cuda"): torch.cuda.synchronize()

def clock(args): return time.process_time if args.clock == "cpu" else time.perf_counter

def size_bytes(size:str) -> int:
    "'491520K' (sysfs' cache size) -> bytes; 0 when it can't be read."
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    try: return int(float(size[:-1]) * units[size[-1]]) if size and size[-1] in units else int(size)
    except (TypeError, ValueError): return 0

def machine() -> dict:
    """The CPU these numbers come from: its model name, cores and cache sizes (Linux sysfs; empty where not readable). The
    decode ratios depend on them (how much of the weights fit the last-level cache), and sessions run on different machines."""
    out = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try: out["cpu_model"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration): pass
    caches = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(caches.glob("index*")) if caches.is_dir() else ():
        try: kind, level, size = ((d / f).read_text().strip() for f in ("type", "level", "size"))
        except OSError: continue
        if kind != "Instruction": out[f"L{level}{'d' if kind == 'Data' else ''}"] = size   # L1d, L2, L3: per core / shared, as sysfs gives them
    return out

# ------------------------------------------------------------------ step time
def time_steps(args, keys):
    base = step_model(args)
    runners = {}
    for k in keys:
        try: runners[k] = Runner(k, base, args)
        except Exception as e:                                          # report, don't stop the benchmark
            FAILED[k] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"; print(f"  {k} failed: {FAILED[k]}", flush=True)
    keys[:] = list(runners)
    for r in runners.values():
        for _ in range(args.warmup): r.step()
    sync(args.device)
    times, now = {k: [] for k in keys}, clock(args)
    for i in range(args.repeats):
        order = keys[i % len(keys):] + keys[:i % len(keys)]   # rotate, so no config always runs first/after another
        for k in order:
            gc.collect(); sync(args.device)
            t0 = now(); runners[k].step(); sync(args.device)
            times[k].append(now() - t0)
        print(f"  round {i + 1}/{args.repeats}: " + " ".join(f"{k}={times[k][-1]*1e3:.0f}" for k in keys), flush=True)
    return times

def count_flops(args, keys):
    "Matmul + attention FLOPs of one step (batch 1) per configuration."
    from torch.utils.flop_counter import FlopCounterMode
    base, out = step_model(args), {}
    for k in keys:
        r = Runner(k, base, args, batch=1)
        with FlopCounterMode(display=False) as fc: r.step()
        out[k] = fc.get_total_flops()
        del r
    return out

# ------------------------------------------------------------------ the hook path alone
def layer_overhead(args, rounds=40, calls=5):
    "One q_proj-sized LoRA layer, fwd + bwd on batch × seq tokens: lora_lite's hook vs PEFT's wrapper, paired rounds."
    import lora_lite as ll, peft
    from torch import nn
    class One(nn.Module):
        def __init__(self): super().__init__(); self.q_proj = nn.Linear(args.hidden, args.hidden, bias=False)
        def forward(self, x): return self.q_proj(x)
    torch.manual_seed(0)
    a = One().to(args.device); b = copy.deepcopy(a)
    ll.attach(a, ll.LoRAConfig(r=R, alpha=ALPHA, target_names=("q_proj",)))
    b = peft.get_peft_model(b, peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["q_proj"]))
    x = torch.randn(args.batch, args.seq, args.hidden, device=args.device)
    def run(m):
        for _ in range(calls):
            xx = x.clone().requires_grad_(); m(xx).square().mean().backward()
    for m in (a, b): run(m)
    t, now = {"ll": [], "peft": []}, clock(args)
    for _ in range(rounds):
        for k, m in (("ll", a), ("peft", b)):
            sync(args.device); t0 = now(); run(m); sync(args.device); t[k].append((now() - t0) / calls * 1e3)
    return {"ll_ms": med(t["ll"]), "peft_ms": med(t["peft"]), "ll_over_peft": paired(t["ll"], t["peft"]),
            "min_ratio": min(t["ll"]) / min(t["peft"]), "rounds": rounds}

# ------------------------------------------------------------------ peak memory (one subprocess per configuration)
def _import_warmup(args):
    """Run the PEFT export/import path once on a throwaway 64-wide model, so both sides' processes have imported the same
    modules (and made any module-level tensors) before the measure begins."""
    v = args.mem_worker.split(":")[-1]
    for name in (v, "lora"):
        try: attach_peft(qwen3(64, 1, 128, 64, head_dim=16), name, args, calib_batches(128)); return
        except Exception: pass

BUILT, MARK = "speed.py model built", "speed.py measured step"

def profiled_memory(build, attach, warmup=2) -> dict:
    """Exact CPU tensor memory of a training step. Under torch's profiler with `profile_memory=True`: `build()` makes the
    model, `attach(model)` adapts it and returns the step (a callable), which runs `warmup` times and then once more. The
    CPU allocator reports every allocation and free of a block made while profiling as a "[memory]" event with the running
    total of live bytes ("Total Allocated"). Returns, in bytes: "model", live once `build` returned (the base model);
    relative to that, "held", live just before the measured step (what attaching and the warm-up steps left: adapter
    tensors, optimizer state, the batch; minus any base weight the adapter replaced), and "step", the maximum over the
    measured step: every tensor byte live at the step's peak beyond the model (activations and saved tensors, gradients,
    temporaries, plus the held bytes). Not counted: the allocator's caching and fragmentation, Python objects and code
    (not tensors), and the frees of blocks allocated before profiling began (the profiler does not know their size; a
    one-line C++ warning says so). Deterministic: the same code gives the same bytes on every run. Once per process:
    the running total is not reset between two profiling sessions, so `mem_worker` measures in a fresh process."""
    import tempfile
    from torch.profiler import ProfilerActivity, profile, record_function
    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model = build(); gc.collect()
        with record_function(BUILT): pass
        step = attach(model)
        for _ in range(warmup): step()
        with record_function(MARK): step()
    with tempfile.TemporaryDirectory() as d:                       # the trace's events carry the allocator's running totals
        prof.export_chrome_trace(str(Path(d) / "t.json")); ev = json.loads((Path(d) / "t.json").read_text())["traceEvents"]
    at = lambda name: next((e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("name") == name)
    (b, _), (t0, t1) = at(BUILT), at(MARK)
    mem = sorted((e["ts"], e["args"]["Total Allocated"], e["args"]["Bytes"]) for e in ev if e.get("name") == "[memory]")
    zero = mem[0][1] - mem[0][2] if mem else 0      # the running total at the session's start (not reset between sessions)
    last = lambda t: max([0] + [a - zero for ts, a, _ in mem if ts < t][-1:])
    model = last(b); held = last(t0) - model
    return {"model": model, "held": held, "step": max([held] + [a - zero - model for ts, a, _ in mem if t0 <= ts <= t1])}

def mem_worker(args):
    """Step memory of configuration args.mem_worker, in this fresh process, printed as JSON (MB). CPU: exact, from the
    allocator's events (`profiled_memory`): step_mb = the tensor bytes live at the measured step's peak beyond the built
    base model's; peak_mb = that + the model's; held_mb = the part already live before the step. (The process' peak RSS,
    measured here until 2026-12-04, is gone: it wandered ~1 MB between identical runs, and under the profiler it would
    also count the profiler's event buffers, which grow with the number of ops.) GPU: torch.cuda.max_memory_allocated, and
    that minus the memory allocated just after the base model is built."""
    torch.set_num_threads(args.threads)
    if args.mem_worker != "base": _import_warmup(args)
    attach = lambda base: Runner(args.mem_worker, base, args, copy_base=False).step   # adapt the built model: no copy
    if args.device.startswith("cuda"):
        base = step_model(args); gc.collect()
        torch.cuda.synchronize(); before = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
        step = attach(base)
        for _ in range(3): step()
        sync(args.device); peak = torch.cuda.max_memory_allocated() / 2**20
        return print(json.dumps({"peak_mb": peak, "step_mb": peak - before}))
    m = profiled_memory(lambda: step_model(args), attach)
    print(json.dumps({"peak_mb": (m["model"] + m["step"]) / 2**20, "step_mb": m["step"] / 2**20, "held_mb": m["held"] / 2**20}))

def mem_run(k, args):
    "`mem_worker`'s result for configuration k, from a fresh process; None (and its error printed) if it failed."
    cmd = [sys.executable, __file__, "--mem-worker", k] + _size_flags(args)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR"})
    if res.returncode:
        print(f"  memory worker {k} failed:\n{res.stderr[-1500:]}", flush=True); return None
    return json.loads(res.stdout.strip().splitlines()[-1])

def measure_memory(args, keys):
    "Step memory of each configuration in its own process (`mem_worker`); `--mem-jobs` processes at a time (exact: no timing)."
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(args.mem_jobs if args.device == "cpu" else 1) as ex: res = list(ex.map(lambda k: mem_run(k, args), keys))
    out = {k: r for k, r in zip(keys, res) if r is not None}
    for k, v in out.items(): print(f"  {k}: peak {v['peak_mb']:.0f} MB, step {v['step_mb']:.0f} MB", flush=True)
    return out

def _size_flags(args):
    return ["--hidden", str(args.hidden), "--layers", str(args.layers), "--seq", str(args.seq), "--batch", str(args.batch),
            "--vocab", str(args.vocab), "--device", args.device, "--threads", str(args.threads), "--config", args.config]

# ------------------------------------------------------------------ init / attach time of SVD-based variants
def time_init(args):
    import lora_lite as ll, peft
    # Qwen3-0.6B widths: hidden 1024, 16 heads × 128 (q_proj 1024->2048), 8 KV heads (k/v_proj 1024->1024)
    base = qwen3(1024, args.init_blocks, 1024, 128, inter=1024, heads=16, kv=8, head_dim=128).to(args.device)
    g = torch.Generator().manual_seed(2)
    calib = [torch.randint(0, 1024, (2, 128), generator=g).to(args.device) for _ in range(2)]
    cases = {
        "ll:lora":          lambda m: ll.attach(m, ll.LoRAConfig(r=R, alpha=ALPHA)),
        "peft:lora":        lambda m: peft.get_peft_model(m, peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=QV)),
        "ll:pissa":         lambda m: ll.attach(m, ll.PiSSAConfig(r=R, alpha=ALPHA)),
        "peft:pissa":       lambda m: peft.get_peft_model(m, peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=QV, init_lora_weights="pissa")),
        "ll:pissa_niter4":  lambda m: ll.attach(m, ll.PiSSAConfig(r=R, alpha=ALPHA, niter=4)),
        "peft:pissa_niter4": lambda m: peft.get_peft_model(m, peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=QV, init_lora_weights="pissa_niter_4")),
        "ll:antipasto":     lambda m: ll.attach(m, ll.AntiPaSTOConfig(r=AP_R)),
        "ll:antipasto_corda": lambda m: ll.attach(m, ll.AntiPaSTOCorDAConfig(r=AP_R), calibration_data=calib),
    }
    times, now = {k: [] for k in cases}, clock(args)
    for i in range(args.init_repeats):
        for k, f in cases.items():
            m = copy.deepcopy(base); gc.collect(); sync(args.device)
            t0 = now(); f(m); sync(args.device)
            times[k].append(now() - t0)
            del m
        print(f"  init round {i + 1}/{args.init_repeats}: " + " ".join(f"{k}={v[-1]:.2f}s" for k, v in times.items()), flush=True)
    return times

# ------------------------------------------------------------------ graph breaks
def graph_breaks(args, keys):
    import torch._dynamo as dynamo
    base, out = step_model(args, layers=2), {}
    for k in keys:
        r = Runner(k, base, args, batch=1)
        dynamo.reset()
        try:
            ex = dynamo.explain(r.model)(inputs_embeds=r.emb, labels=r.ids)
            out[k] = {"graph_breaks": ex.graph_break_count, "graphs": ex.graph_count,
                      "reasons": sorted({str(b.reason).splitlines()[0][:160] for b in ex.break_reasons})}
        except Exception as e:   # report, don't fail the benchmark
            out[k] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        print(f"  {k}: {out[k]}", flush=True)
    dynamo.reset()
    return out


# ------------------------------------------------------------------ decode: batch-1 greedy generation and a prefill step
# Qwen3-0.6B block widths (hidden 1024, 16 heads × 128, 8 KV heads, MLP 3072), 2 blocks, vocab 4096: the small vocab keeps
# the lm_head (which no adapter touches) from diluting the adapters' share of a token (Qwen3-0.6B's real 151,936-row
# head would be 5× the two blocks; in the real 28-block model it is 0.36× them, closer to this setting's 0.13×).
DEC = dict(hidden=1024, layers=2, vocab=4096, inter=3072, heads=16, kv=8, head_dim=128)
def decode_model(seed=0):
    d = DEC
    return qwen3(d["hidden"], d["layers"], d["vocab"], 256, inter=d["inter"], heads=d["heads"], kv=d["kv"], head_dim=d["head_dim"], seed=seed).eval()

def decode_attach(key, base, calib, args):
    """A copy of `base` with configuration `key` ('base', 'll:<variant>', 'peft:<variant>') attached, in eval mode. lora_lite
    never writes a base weight, so its copies share `base`'s parameters (one copy of the weights for every lora_lite row);
    the base row and PEFT's rows get their own. Not one copy for all: this model's 140 MB of weights fit the 260 MB L3 of
    the machine that ran 2026-12-04's runs (each run's machine is in its meta), so a base row sharing them ran L3-hot
    while a row that adds tensors spilled, and the ratios measured the cache's size, not traffic (tried 2026-12-04:
    full-rank methods went from their floors to ~1.05 × them). With two copies each token pair streams 280 MB and both
    rows read from memory, as decoding a real model (GBs of weights) does (on a machine whose L3 holds both copies, as
    the 480 MB one of 2026-12-04's second session, they don't: compare runs only with their machine)."""
    if key == "base": return copy.deepcopy(base)
    if key == "copy": return base                                       # the control: lora_lite's copy of the weights, no adapter
    lib, v = key.split(":")
    if lib == "peft": return attach_peft(copy.deepcopy(base), v, args, calib, moved=True)[0].eval()
    m = copy.deepcopy(base, {id(p): p for p in base.parameters()})
    attach_ll(m, v, args, calib, moved=True)
    return m.eval()

def decode_keys(args):
    "'base', 'copy' (the control: the lora_lite rows' weights, no adapter), then per variant 'll:<v>', 'merged:<v>' (the same model inside `ll.merged`) and 'peft:<v>' where PEFT has it."
    keys = ["base", "copy"]
    for v in variants(args):
        keys.append(f"ll:{v}")
        if not args.no_merged: keys.append(f"merged:{v}")
        if has_peft(v) and not args.no_peft: keys.append(f"peft:{v}")
    return keys

def token_ops(step) -> int:
    "Tensor operations (aten calls, TorchDispatchMode) of one decode step: the per-call fixed costs no floor counts."
    from torch.utils._python_dispatch import TorchDispatchMode
    class Count(TorchDispatchMode):
        n = 0
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1; return func(*args, **(kwargs or {}))
    with torch.inference_mode(), Count() as c: step()
    return c.n

class TokenStep:
    """One decode step of model `m`, repeatable: the 8-token prompt is prefilled once (its KV cache kept), then each call
    runs the forward of one new token at position 8 and crops the cache back, so every call does the same work as one
    token of greedy generation (the attention over ≤ 32 positions is negligible next to the weights at these widths)."""
    def __init__(self, m, prompt, mode, now):
        self.m, self.now = m, now
        with torch.inference_mode(), mode:
            out = m(prompt, use_cache=True)
        self.cache, self.tok = out.cache, out.logits[:, -1:].argmax(-1)
    def __call__(self):
        t0 = self.now(); self.m(input_ids=self.tok, cache=self.cache, use_cache=True); t = self.now() - t0
        self.cache.crop(-1); return t

def decode_goals(rows) -> list:
    """Hooked decode within 3 % of its floor, merged decode within 1 % of the base (both ÷ the run's copy row). Prefill (a batch 8 × 128 forward) is
    reported, not a goal: there a method pays its arithmetic (GLoRA's or HiRA's full-rank update), which no flat limit fits."""
    limits = {"ll": (("decode ÷ its weight-traffic floor", "decode_over_floor", 1.03),),
              "merged": (("decode ÷ base (÷ the copy row)", "decode_over_copy", 1.01),)}
    return [{"goal": f"{k} {what}", "value": r.get(f), "limit": lim, "met": None if r.get(f) is None else r[f] <= lim}
            for k, r in rows.items() for what, f, lim in limits.get(k.split(":")[0], ())]

def time_decode(args):
    """Per-token time of batch-1 decode, each token of a row timed right between two tokens of the base (the ratios), a
    greedy `generate` per row for the token check, and a batch 8 × 128 prefill."""
    import lora_lite as ll
    from contextlib import nullcontext
    torch.manual_seed(0)
    base = decode_model()
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, DEC["vocab"], (1, 8), generator=g)
    pre = torch.randint(0, DEC["vocab"], (args.prefill_batch, args.prefill_seq), generator=g)
    calib = [torch.randint(0, DEC["vocab"], (2, 64), generator=g) for _ in range(2)]
    models, failed, merge_s = {}, {}, {}
    for k in decode_keys(args):
        try:
            if k.startswith("merged:"):                                 # the hooked model's copy, run inside ll.merged
                models[k] = models[k.replace("merged:", "ll:")]
                t0 = time.process_time()
                with ll.merged(models[k]): pass                         # refused (no fixed ΔW, ...)? say so now
                merge_s[k] = time.process_time() - t0                   # what entering it costs (W + ΔW for every layer), once
            else: models[k] = decode_attach(k, base, calib, args)
        except Exception as e:                                          # report, don't stop the benchmark
            models.pop(k, None)
            failed[k] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"; print(f"  {k} failed: {failed[k]}", flush=True)
    from lora_lite.checks import decode_floor
    floors = {k: decode_floor(m) for k, m in models.items() if k.startswith("ll:")}   # weight traffic ÷ base's, cheapest exact form
    n_layers = {k: len(ll.adapter_layers(m)) for k, m in models.items() if k.startswith("ll:")}
    keys, now, n = list(models), clock(args), args.new_tokens
    two_copies = 2 * sum(p.numel() * p.element_size() for p in base.parameters())   # the base row's weights and the lora_lite rows'
    mc = machine()
    l3 = size_bytes(mc.get("L3", ""))
    if l3 >= two_copies:                                               # see decode_attach: the rows would not stream from memory
        print(f"  note: this machine's L3 ({l3 / 2**20:.0f} MB) holds both copies of the decode model's weights ({two_copies / 2**20:.0f} MB): "
              "the rows decode from the cache, not from memory; compare these ratios only with runs on such a machine", flush=True)
    mode = lambda k: ll.merged(models[k]) if k.startswith("merged:") else nullcontext()   # entered outside the clock
    def gen(m):
        with torch.inference_mode():
            return m.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    def prefill(m):
        with torch.inference_mode(): return m(pre).logits
    toks, steps, ops = {}, {}, {}
    for k in keys:                                                      # warm-up (and the cache fill), the token check
        with mode(k):
            toks[k] = gen(models[k])[0, -n:].tolist(); prefill(models[k])
            steps[k] = TokenStep(models[k], prompt, nullcontext(), now)
            with torch.inference_mode(): steps[k]()                    # the caches filled,
            ops[k] = token_ops(steps[k])                                # then one token counted
    # Decode: b, k, b, k, ..., b token by token: each of row k's n tokens sits between two base tokens (~10 ms apart),
    # and its ratio is k's n tokens ÷ the mean of the base's n tokens before and after. On this machine the base's own
    # per-token time wanders 8-17 ms over seconds (the two blocks' weights sit in an L3 shared with other jobs), which
    # whole-`generate` pairs could not cancel (quartiles ±5-10 %); token pairs can (typically ±1-2 %).
    # Prefill (one batch 8 × 128 forward, ~0.6 s) keeps whole-call pairs: base, k1, base, k2, ...
    dt, pt = {k: [] for k in keys}, {k: [] for k in keys}
    rd, rp = {k: [] for k in keys}, {k: [] for k in keys}              # the paired ratios
    def decode_pair(k):
        with mode(k), torch.inference_mode():
            gc.collect()
            tb, tk = [steps["base"]()], []
            for _ in range(n): tk.append(steps[k]()); tb.append(steps["base"]())
        dt[k].append(sum(tk) / n); dt["base"].append(sum(tb) / len(tb))
        rd[k].append(sum(tk) / ((sum(tb[:-1]) + sum(tb[1:])) / 2))
    def timed(f, k, size):
        with mode(k):
            gc.collect(); t0 = now(); f(models[k]); return (now() - t0) / size
    others = [k for k in keys if k != "base"]
    measured = [k for k in others if k != "copy"]                       # the rows; the copy control only follows them
    def steady(v):                                                      # quartiles of the ratios within ±3 % of their median
        if len(v) < 4: return False
        q1, m, q3 = statistics.quantiles(v, n=4)
        return q1 >= 0.97 * m and q3 <= 1.03 * m
    def wanted(k, i):
        "Time k's decode in round i? Every row for --decode-repeats rounds, then only the unsteady ones, up to --decode-max."
        if k == "copy": return True                                     # the control runs every round any row runs
        if i >= 2 and med(rd[k]) > 3: return False                     # ≥ 3× slower (PEFT's HRA): 2 rounds do
        if k.startswith("peft:"): return i < args.peft_repeats          # PEFT's column is context, not a goal: fewer rounds
        return i < args.decode_repeats or not steady(rd[k])
    i = 0
    while i < args.decode_repeats or (i < args.decode_max and any(wanted(k, i) for k in measured)):
        order = [k for k in others[i % len(others):] + others[:i % len(others)] if wanted(k, i)]
        for k in order: decode_pair(k)
        if i < args.prefill_repeats:
            before = timed(prefill, "base", pre.numel()); pt["base"].append(before)
            for k in order:
                t = timed(prefill, k, pre.numel()); after = timed(prefill, "base", pre.numel())
                pt[k].append(t); pt["base"].append(after); rp[k].append(t / ((before + after) / 2)); before = after
        print(f"  decode round {i + 1}: {len(order)} rows timed, base {med(dt['base'][-len(order):]) * 1e3:.2f} ms/token", flush=True)
        i += 1
    rows, c = {}, med(rd["copy"])
    q = lambda v: statistics.quantiles(v, n=4) if len(v) >= 4 else [None, None, None]   # fewer rounds (a smoke run): no quartiles
    for k in measured:
        hooked = k.replace("merged:", "ll:")
        rows[k] = {"decode_ms_per_token": med(dt[k]) * 1e3, "decode_over_base": med(rd[k]), "decode_quartiles": q(rd[k]),
                   "decode_rounds": len(rd[k]), "steady": steady(rd[k]),
                   "prefill_us_per_token": med(pt[k]) * 1e6 if pt[k] else None, "prefill_over_base": med(rp[k]) if rp[k] else None,
                   "same_tokens_as_base": toks[k] == toks["base"], "same_tokens_as_hooked": toks[k] == toks.get(hooked),
                   "floor": floors.get(hooked), "ops_per_layer": (ops[k] - ops["base"]) / n_layers[hooked] if hooked in n_layers else None,
                   "layers": n_layers.get(hooked)}                      # adapted layers: a row's time over its floor, per layer
        if not k.startswith("peft:"): rows[k].update(copy_over_base=c, decode_over_copy=med(rd[k]) / c)   # PEFT's rows stream their own copy
        if k in merge_s: rows[k]["merge_ms"] = merge_s[k] * 1e3
    for k, r in rows.items():                                          # hooked decode's goal: within 3 % of its floor
        if k.startswith("ll:") and r["floor"]: r["decode_over_floor"] = r["decode_over_copy"] / r["floor"]
    return {"meta": {"model": DEC, "new_tokens": n, "prompt": 8, "prefill": [args.prefill_batch, args.prefill_seq],
                     "pairing": "token", "config": args.config, "configs": dict(CONFIGS), "rounds": i, "min_rounds": args.decode_repeats,
                     "peft_rounds": args.peft_repeats, "prefill_rounds": args.prefill_repeats,
                     "threads": torch.get_num_threads(), "clock": args.clock, "machine": mc, "l3_holds_both_copies": l3 >= two_copies, "date": time.strftime("%Y-%m-%d %H:%M")},
            "base": {"decode_ms_per_token": med(dt["base"]) * 1e3, "prefill_us_per_token": med(pt["base"]) * 1e6 if pt["base"] else None},
            "copy": {"decode_over_base": c, "decode_quartiles": q(rd["copy"]), "decode_rounds": len(rd["copy"])},
            "rows": rows, "failed": failed, "goals": decode_goals(rows)}

def update_decode(path, d, variants, why=None):
    """Replace, in the results file `path`, the decode rows (hooked, merged, PEFT: those this run timed) of `variants` by this run's `d` (after a
    code change; the ratios are paired with the base within each run, so rows of two runs compare); meta.updated says so."""
    old = json.loads(Path(path).read_text())
    dec = old["decode"]
    if dec["meta"].get("model") != d["meta"].get("model"):
        raise ValueError(f"--update: this run's decode model {d['meta'].get('model')} is not {path}'s {dec['meta'].get('model')}; "
                         "ratios of different models don't mix in one table (drop --update, or --decode-blocks).")
    kinds = {k.split(":")[0] for k in d["rows"]}                      # a --no-peft run keeps the PEFT rows it didn't time
    for k in [k for k in dec["rows"] if k.split(":")[1] in variants and k.split(":")[0] in kinds]: del dec["rows"][k]
    dec["rows"].update({k: r for k, r in d["rows"].items() if k.split(":")[1] in variants})
    dec["failed"] = {**{k: e for k, e in dec["failed"].items() if k.split(":")[1] not in variants}, **d["failed"]}
    dec["goals"] = decode_goals(dec["rows"])
    dec["meta"].setdefault("updated", []).append({"variants": sorted(variants), "date": d["meta"]["date"], "rounds": d["meta"]["rounds"],
                                                  "base_ms_per_token": d["base"]["decode_ms_per_token"], "copy_over_base": (d.get("copy") or {}).get("decode_over_base"),
                                                  "machine": d["meta"].get("machine"), "why": (why or "re-measured after a code change") + ", paired with the base in its own run"})
    Path(path).write_text(json.dumps(old, indent=1))
    return dec

def print_decode(d):
    m = d["meta"]
    pairs = "each token between two base tokens" if m.get("pairing") == "token" else "each generate between two base generates"
    print(f"\n== decode: Qwen3 {m['model']}, batch-1, {m['new_tokens']} tokens per round ({pairs}), prefill {m['prefill']}; "
          f"medians over {m.get('min_rounds', m['rounds'])}–{m['rounds']} rounds (more for rows whose quartiles were not yet within ±3 %; "
          f"PEFT {m.get('peft_rounds', m['rounds'])}) / {m['prefill_rounds']} prefill rounds of per-token time ÷ the mean of the base runs just before "
          f"and after (in brackets: the quartiles of the decode ratios); merged = the same adapter inside ll.merged")
    print(f"base: {d['base']['decode_ms_per_token']:.2f} ms/token decode, {fmt(d['base']['prefill_us_per_token'], 1)} µs/token prefill")
    if mc := m.get("machine"): print("machine: " + ", ".join(f"{k} {v}" for k, v in mc.items()))
    if d.get("copy"): print(f"copy (the lora_lite rows' weights, no adapter) ÷ base: {d['copy']['decode_over_base']:.3f} "
                            f"({fmt(d['copy']['decode_quartiles'][0], 3)}–{fmt(d['copy']['decode_quartiles'][2], 3)}); the decode columns are ÷ the copy, as the goals")
    vs = sorted({k.split(':')[1] for k in d["rows"]})
    print(f"{'variant':18s}{'floor':>7s}{'ll decode':>19s}{'merged decode':>19s}{'peft decode':>19s}{'ll prefill':>12s}{'merged':>8s}{'peft':>8s}{'merge ms':>10s}")
    for v in vs:
        a, mg, b = (d["rows"].get(f"{lib}:{v}") for lib in ("ll", "merged", "peft"))
        f = lambda r, k: fmt(r[k], 3) if r else "-"
        c = lambda r: r.get("copy_over_base") or 1.0                   # ÷ the run's copy row, as the goals (PEFT's and older rows: ÷ base)
        iq = lambda r: (f"{r['decode_over_base'] / c(r):.3f} ({r['decode_quartiles'][0] / c(r):.2f}–{r['decode_quartiles'][2] / c(r):.2f})"
                        if r and r.get("decode_quartiles", [None])[0] else f(r, "decode_over_base"))
        print(f"{v:18s}{f(a, 'floor'):>7s}{iq(a):>19s}{iq(mg):>19s}{iq(b):>19s}{f(a, 'prefill_over_base'):>12s}{f(mg, 'prefill_over_base'):>8s}{f(b, 'prefill_over_base'):>8s}{fmt((mg or {}).get('merge_ms'), 0):>10s}")
    for k, e in d["failed"].items(): print(f"  {k}: FAILED {e}")

# ------------------------------------------------------------------ report
def med(v): return statistics.median(v)

def paired(ta, tb):
    "Median over rounds of ta[i] / tb[i]: each round's two steps ran close in time, so slow drifts of the machine cancel."
    return med([a / b for a, b in zip(ta, tb)]) if ta and tb else None

def div(a, b): return (a / b) if (a is not None and b) else None

MEM_FIELDS = ("ll_over_peft_stepmem", "ll_over_peft_peak", "over_lora_stepmem", "over_lora_peak", "over_base_stepmem")

def mem_ratios(mem, v) -> dict:
    "Variant v's row fields from the memory section `mem` ({key: {step_mb, peak_mb}}): its step memory and peak ÷ PEFT's, LoRA's, the base's."
    mm = {k: x["step_mb"] for k, x in (mem or {}).items()}
    pk = {k: x["peak_mb"] for k, x in (mem or {}).items()}
    k, p = f"ll:{v}", f"peft:{v}"
    return {"ll_over_peft_stepmem": div(mm.get(k), mm.get(p)), "ll_over_peft_peak": div(pk.get(k), pk.get(p)),
            "over_lora_stepmem": div(mm.get(k), mm.get("ll:lora")), "over_lora_peak": div(pk.get(k), pk.get("ll:lora")),
            "over_base_stepmem": div(mm.get(k), mm.get("base"))}

MEASURE = {"cpu": "exact tensor bytes from the CPU allocator's events under torch.profiler (speed.py profiled_memory): step = live "
                  "at the measured step's peak and allocated after the base model was built; peak = step + the model's tensors",
           "cuda": "torch.cuda.max_memory_allocated; step = that minus the memory allocated after the base model was built"}

def build_report(args, keys, step_t, flops, mem, init_t, breaks, wall):
    ms = {k: med(v) * 1e3 for k, v in step_t.items()}
    pr = lambda a, b: paired(step_t.get(a), step_t.get(b))
    rows = []
    for k in keys:
        if not k.startswith("ll:"): continue
        v = k[3:]
        p = f"peft:{v}"
        rows.append({"variant": v, "config": CONFIGS.get(v, (None,))[0],
                     "ll_ms": ms.get(k), "peft_ms": ms.get(p),
                     "ll_over_peft_step": pr(k, p), "over_lora_step": pr(k, "ll:lora"),
                     "over_base_step": pr(k, "base"), "peft_over_base_step": pr(p, "base"),
                     "over_base_flops_predicted": div(flops.get(k), flops.get("base")), **mem_ratios(mem, v)})
    init = {k: med(v) for k, v in init_t.items()} if init_t else {}
    init_ratios = {m: div(init.get(f"ll:{m}"), init.get(f"peft:{m}")) for m in ("lora", "pissa", "pissa_niter4")} if init else {}
    return {"meta": {"device": args.device, "threads": torch.get_num_threads(), "clock": args.clock, "torch": torch.__version__,
                     "peft": __import__("peft").__version__, "transformers": __import__("transformers").__version__,
                     **machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
                     "sizes": {"hidden": args.hidden, "layers": args.layers, "seq": args.seq, "batch": args.batch,
                               "vocab": args.vocab, "mlp": 3 * args.hidden, "heads": args.hidden // 64, "head_dim": 64},
                     "adapter": {"config": args.config, "configs": dict(CONFIGS)}, "failed": dict(FAILED),
                     "repeats": args.repeats, "warmup": args.warmup, "init_repeats": args.init_repeats,
                     "init_model": {"hidden": 1024, "q_proj": "1024->2048", "v_proj": "1024->1024", "blocks": args.init_blocks},
                     "quick": args.quick, "wall_s": wall, "memory": MEASURE["cuda" if args.device.startswith("cuda") else "cpu"]},
            "step_ms": {k: {"median": ms[k], "all": [t * 1e3 for t in step_t[k]]} for k in step_t},
            "flops": flops, "memory_mb": mem, "init_s": {k: {"median": init[k], "all": init_t[k]} for k in init},
            "init_ratios": init_ratios, "rows": rows, "graph_breaks": breaks, "goals": goals_of(rows, init_ratios)}

def goals_of(rows, init_ratios) -> list:
    "The step section's goals, from its rows and the init ratios."
    goals = []
    def goal(name, value, limit):
        goals.append({"goal": name, "value": value, "limit": limit, "met": None if value is None else value <= limit})
    byv = {r["variant"]: r for r in rows}
    if "lora" in byv: goal("LoRA step: lora_lite ÷ PEFT", byv["lora"]["ll_over_peft_step"], 1.00)
    for v, r in byv.items():                                           # every method PEFT has (within this machine's noise)
        if v != "lora" and r["ll_over_peft_step"] is not None: goal(f"{v} step: lora_lite ÷ PEFT", r["ll_over_peft_step"], 1.05)
    for v, r in byv.items():
        if r["ll_over_peft_stepmem"] is not None: goal(f"{v} step memory: lora_lite ÷ PEFT", r["ll_over_peft_stepmem"], 1.00)
    if "dora" in byv:
        goal("DoRA step ÷ lora_lite LoRA step", byv["dora"]["over_lora_step"], 1.15)
        goal("DoRA peak memory ÷ LoRA's (step memory)", byv["dora"]["over_lora_stepmem"], 1.05)
        goal("DoRA peak memory ÷ LoRA's (model + step)", byv["dora"]["over_lora_peak"], 1.05)
    for m in ("pissa", "pissa_niter4"):
        if init_ratios.get(m) is not None: goal(f"PiSSA init ({m}): lora_lite ÷ PEFT", init_ratios[m], 1.00)
    return goals

def update_rows(path, rep, variants, why=None):
    """Merge this run into the full run's results file `path`. Step section (when this run timed steps): the step rows' time
    and FLOP fields and step_ms/flops of `variants` (timed next to the base and LoRA after a code change) replace the old.
    Memory section (when this run measured it): every configuration it measured replaces the old entry (memory is exact
    and needs no reference run, so a memory-only run — `--skip step flops ...` — leaves every step time as it was), and
    every row's memory ratios are recomputed from the merged memory_mb. Init section (when this run timed it): its init_s and
    init_ratios replace the old ones. The goals are recomputed; meta.updated says what."""
    old = json.loads(Path(path).read_text())
    timed, mem = bool(rep.get("step_ms")), rep.get("memory_mb") or {}
    mine = {r["variant"]: r for r in rep["rows"] if r["variant"] in variants}
    keep = lambda r: {f: x for f, x in r.items() if f in MEM_FIELDS}
    if timed:
        rows = {r["variant"]: r for r in old["rows"]}
        for v, r in mine.items(): rows[v] = {**r, **keep(rows.get(v, {}))}
        old["rows"] = list(rows.values())
        keys = [k for k in rep["step_ms"] if k.split(":")[-1] in variants]
        for part in ("step_ms", "flops"):
            old.setdefault(part, {}).update({k: rep[part][k] for k in keys if k in (rep.get(part) or {})})
        fl = old.get("flops") or {}
        for v in mine:                                                  # a run that skipped the FLOP count keeps the file's
            if rows[v].get("over_base_flops_predicted") is None: rows[v]["over_base_flops_predicted"] = div(fl.get(f"ll:{v}"), fl.get("base"))
    if mem:
        old.setdefault("memory_mb", {}).update(mem)
        old["meta"]["memory"] = rep["meta"].get("memory")
        for r in old["rows"]: r.update(mem_ratios(old["memory_mb"], r["variant"]))
    if rep.get("init_s"): old["init_s"], old["init_ratios"] = {**old.get("init_s", {}), **rep["init_s"]}, {**old.get("init_ratios", {}), **rep["init_ratios"]}
    old["goals"] = goals_of(old["rows"], old.get("init_ratios", {}))
    add_layer_goal(old)
    what = (["step time"] if timed else []) + (["memory"] if mem else []) + (["init"] if rep.get("init_s") else [])
    old["meta"].setdefault("updated", []).append({"variants": sorted(mine) if timed else sorted({k.split(":")[-1] for k in mem or rep.get("init_s") or {}}),
                                                  "sections": what, "date": rep["meta"]["date"],
                                                  "repeats": rep["meta"]["init_repeats"] if what == ["init"] else rep["meta"]["repeats"],
                                                  "why": (why or "re-measured after a code change") + (", in a run with the base and LoRA" if timed else "")})
    Path(path).write_text(json.dumps(old, indent=1))
    return old

def add_layer_goal(rep):
    "The LoRA goal once more on the hook path alone (one layer, 40 paired rounds), right after the whole-model one."
    L = rep.get("layer")
    if not L: return
    g = {"goal": "LoRA hook path, one layer fwd+bwd: lora_lite ÷ PEFT", "value": L["ll_over_peft"], "limit": 1.00,
         "met": L["ll_over_peft"] <= 1.00}
    i = next((i for i, x in enumerate(rep["goals"]) if x["goal"].startswith("LoRA step")), -1)
    rep["goals"].insert(i + 1, g)

def fmt(x, d=2): return "   -" if x is None else f"{x:.{d}f}"

def print_report(rep):
    m = rep["meta"]
    print(f"\n== lora_lite vs PEFT {m['peft']} on {m['device']} ({m['threads']} threads, {m['clock']} clock), Qwen3 {m['sizes']}, "
          f"config {m['adapter']['config']} (PEFT's side: lora_lite's adapter through ll.to_peft); medians of {m['repeats']} interleaved rounds")
    if "base" in rep["step_ms"]: print(f"base step: {rep['step_ms']['base']['median']:.0f} ms")
    hdr = f"{'variant':17s}{'ll ms':>8s}{'peft ms':>8s} | {'ll/peft':>7s}{'mem':>6s} | {'/LoRA':>6s}{'mem':>6s} | {'/base':>6s}{'pred':>6s}{'peft':>6s}"
    print(hdr); print("-" * len(hdr))
    ms = lambda x: "   -" if x is None else format(x, "8.0f")
    for r in rep["rows"]:
        print(f"{r['variant']:17s}{ms(r['ll_ms']):>8s}{ms(r['peft_ms']):>8s} | "
              f"{fmt(r['ll_over_peft_step']):>7s}{fmt(r['ll_over_peft_stepmem']):>6s} | {fmt(r['over_lora_step']):>6s}{fmt(r['over_lora_stepmem']):>6s} | "
              f"{fmt(r['over_base_step']):>6s}{fmt(r['over_base_flops_predicted']):>6s}{fmt(r['peft_over_base_step']):>6s}")
    print("columns: ll/peft = step-time ratio, mem = step-memory ratio (peak minus the built model); /LoRA = vs lora_lite LoRA;\n"
          "         /base = vs the frozen base (fwd+bwd to the input), pred = FLOP-count prediction of /base, peft = PEFT's /base")
    if rep.get("layer"):
        L = rep["layer"]
        print(f"\none q_proj-sized LoRA layer, fwd+bwd ({L['rounds']} paired rounds): lora_lite ÷ PEFT {L['ll_over_peft']:.3f} "
              f"(ratio of minima {L['min_ratio']:.3f}); {L['ll_ms']:.2f} vs {L['peft_ms']:.2f} ms")
    if rep["init_s"]:
        print("\ninit/attach time (s), Qwen3-0.6B-sized q/v, " + f"{m['init_model']['blocks']} blocks:")
        for k, v in rep["init_s"].items(): print(f"  {k:22s}{v['median']:7.3f}")
        print("  ratios ll/peft: " + ", ".join(f"{k} {fmt(v)}" for k, v in rep["init_ratios"].items()))
    for k, e in m.get("failed", {}).items(): print(f"  {k}: FAILED {e}")
    if rep["graph_breaks"]:
        print("\ngraph breaks (torch._dynamo.explain, 2-block model): " +
              ", ".join(f"{k} {v.get('graph_breaks', v.get('error'))}" for k, v in rep["graph_breaks"].items()))
    print("\ngoals:")
    for g in rep["goals"]:
        print(f"  [{'met' if g['met'] else 'NOT met' if g['met'] is False else '?'}] {g['goal']}: {fmt(g['value'], 3)} (≤ {g['limit']:.2f})")

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=512); p.add_argument("--layers", type=int, default=8)
    p.add_argument("--seq", type=int, default=256); p.add_argument("--batch", type=int, default=2)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--device", default="cpu"); p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    p.add_argument("--clock", choices=["cpu", "wall"], default=None, help="step timer (default: cpu on CPU, wall on GPU)")
    p.add_argument("--mem-jobs", type=int, default=2, help="memory subprocesses run at once (CPU)")
    p.add_argument("--repeats", type=int, default=9); p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--init-repeats", type=int, default=5); p.add_argument("--init-blocks", type=int, default=2)
    p.add_argument("--only", nargs="*", help="variants to time (default: every registered one)")
    p.add_argument("--skip", nargs="*", default=[], choices=["step", "layer", "memory", "init", "breaks", "flops", "decode"],
                   help="sections to leave out")
    p.add_argument("--config", choices=["bench", "default", "example"], default="bench",
                   help="adapter config per variant: the GSM8K paper preset's (r=32, α=64 ⊕ the variant's `bench`), the config's "
                        "defaults, or the variant's small `example`; a config that doesn't fit the model falls back to the next")
    p.add_argument("--no-peft", action="store_true", help="leave out the PEFT side (step and decode)")
    p.add_argument("--no-merged", action="store_true", help="leave out the ll.merged column of the decode section")
    p.add_argument("--quick", action="store_true", help="hidden 256, 4 blocks, seq 128, 5 rounds: a ~1 min smoke run")
    p.add_argument("--decode-only", action="store_true", help="only the decode section (~10 min); merged into the results JSON")
    p.add_argument("--decode-repeats", type=int, default=9, help="decode rounds for every row")
    p.add_argument("--decode-max", type=int, default=25, help="more rounds, up to this many, for rows whose quartiles are not yet within ±3 %%")
    p.add_argument("--peft-repeats", type=int, default=5, help="decode rounds of PEFT's rows"); p.add_argument("--prefill-repeats", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--decode-blocks", type=int, default=None, help="blocks of the decode model (default 2); more where the L3 "
                                                                    "holds two copies of its weights (a run apart from the results file)")
    p.add_argument("--prefill-batch", type=int, default=8); p.add_argument("--prefill-seq", type=int, default=128)
    p.add_argument("--out", default=None); p.add_argument("--mem-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--update", default=None, help="with --only: replace those variants' step rows (with --decode-only: their decode "
                                                  "rows) in this full-run results file (re-measure after a code change; in the step "
                                                  "section 'lora' in --only is the reference and is kept)")
    p.add_argument("--why", default=None, help="with --update: why these rows were re-measured, recorded in meta.updated "
                                               "(default: 're-measured after a code change')")
    args = p.parse_args(argv)
    args.clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    if args.quick:
        args.hidden, args.layers, args.seq, args.repeats, args.warmup, args.init_repeats, args.init_blocks = 256, 4, 128, 5, 1, 3, 1
    if args.device == "cpu": torch.set_num_threads(args.threads)
    if args.mem_worker: return mem_worker(args)
    t0 = time.perf_counter()
    if args.decode_blocks: DEC["layers"] = args.decode_blocks                # recorded in the decode meta's model
    partial = bool(args.only or args.skip or args.no_peft or args.no_merged or args.config != "bench" or args.decode_blocks)   # never overwrite the full run's file
    out = Path(args.out or Path(__file__).parent / "results" /
               f"speed_{args.device.split(':')[0]}{'_quick' if args.quick else ''}{'_partial' if partial else ''}.json")
    if args.decode_only:
        print("decode (per-token time):", flush=True)
        d = time_decode(args)
        if args.update:
            print_decode(update_decode(args.update, d, args.only or variants(args), args.why))
            return print(f"\nupdated the decode rows of {', '.join(args.only or ['every variant'])} in {args.update}")
        print_decode(d)
        rep = json.loads(out.read_text()) if out.exists() else {}
        rep["decode"] = d
        out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(rep, indent=1))
        return print(f"\nwrote the decode section into {out} (wall {time.perf_counter() - t0:.0f} s)")
    keys = run_keys(args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; configs: {keys}", flush=True)
    print("step time (ms per round):", flush=True)
    step_t = {} if "step" in args.skip else time_steps(args, keys)
    flops = {} if "flops" in args.skip else count_flops(args, keys)
    layer = layer_overhead(args) if "ll:lora" in keys and "layer" not in args.skip else {}
    if layer: print(f"one LoRA layer fwd+bwd: lora_lite {layer['ll_ms']:.2f} ms, PEFT {layer['peft_ms']:.2f} ms", flush=True)
    print("step memory (a subprocess per configuration):", flush=True)
    mem = {} if "memory" in args.skip else measure_memory(args, keys)
    print("init time:", flush=True)
    init_t = {} if "init" in args.skip else time_init(args)
    print("graph breaks:", flush=True)
    breaks = {} if "breaks" in args.skip else graph_breaks(args, [k for k in ("base", "ll:lora", "ll:dora", "ll:hra", "ll:ia3_ff", "peft:lora") if k in keys])
    rep = build_report(args, keys, step_t, flops, mem, init_t, breaks, time.perf_counter() - t0)
    rep["layer"] = layer
    add_layer_goal(rep)
    if args.update:
        only = args.only or variants(args)
        rep = update_rows(args.update, rep, [v for v in only if v not in ("lora",)] or only, args.why)
        print_report(rep); return print(f"\nupdated the rows of {', '.join(args.only or ['every variant'])} in {args.update}")
    if "decode" not in args.skip:
        print("decode (per-token time):", flush=True)
        rep["decode"] = time_decode(args)
    print_report(rep)
    if rep.get("decode"): print_decode(rep["decode"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=1))
    print(f"\nwrote {out} (wall {rep['meta']['wall_s']:.0f} s)")

if __name__ == "__main__":
    main()
