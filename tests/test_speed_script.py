"""benchmarks/speed.py's bookkeeping (no timing): a decode re-measure replaces only the rows it timed; the decode rows'
adapters are moved off init; the exact step-memory measure (allocator events) and a memory-only re-measure's update."""
import json, os, sys
import pytest
from pathlib import Path
import torch
import lora_lite as ll
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import speed  # noqa: E402
from conftest import tiny_qwen3  # noqa: E402


def test_update_decode_keeps_rows_it_did_not_time(tmp_path):
    row = lambda x: {"decode_over_base": x}
    old = {"decode": {"rows": {"ll:lora": row(1.04), "merged:lora": row(1.01), "peft:lora": row(1.05), "ll:dora": row(1.05)},
                      "failed": {}, "meta": {}, "goals": []}}
    p = tmp_path / "r.json"; p.write_text(json.dumps(old))
    new = {"rows": {"ll:lora": row(1.02), "merged:lora": row(1.00)}, "failed": {}, "meta": {"date": "d", "rounds": 9},
           "base": {"decode_ms_per_token": 10.0}}
    speed.update_decode(p, new, ["lora"])                                   # a --no-peft run of lora
    rows = json.loads(p.read_text())["decode"]["rows"]
    assert rows["ll:lora"] == row(1.02) and rows["merged:lora"] == row(1.00)
    assert rows["peft:lora"] == row(1.05) and rows["ll:dora"] == row(1.05)  # not timed: kept
    speed.update_decode(p, new, ["lora"], why="quiet-machine re-run")        # the reason given is what meta.updated records
    ups = json.loads(p.read_text())["decode"]["meta"]["updated"]
    assert ups[0]["why"].startswith("re-measured after a code change") and ups[1]["why"].startswith("quiet-machine re-run")
    before = p.read_text()
    with pytest.raises(ValueError, match="decode model"):                  # a --decode-blocks run: another model's ratios
        speed.update_decode(p, {**new, "meta": {**new["meta"], "model": {"layers": 6}}}, ["lora"])
    assert p.read_text() == before


def test_move_off_init_changes_only_trainable_tensors():
    m = tiny_qwen3(hidden=64); ll.attach(m, ll.LoRAConfig(r=4))
    before = {n: p.clone() for n, p in m.named_parameters()}
    speed.move_off_init(m)
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in m.named_parameters() if p.requires_grad} and moved


def test_decode_rows_share_weights_and_the_base_row_has_its_own():
    base = tiny_qwen3(hidden=64).eval()
    class A: config = "example"
    b = speed.decode_attach("base", base, None, A)
    m = speed.decode_attach("ll:lora", base, None, A)
    ptr = lambda mod: {n: p.data_ptr() for n, p in mod.named_parameters() if "ll_" not in n}
    assert ptr(m) == ptr(base)                                 # lora_lite never writes a base weight: one copy for its rows
    assert not set(ptr(b).values()) & set(ptr(base).values())  # the base row streams its own copy (see decode_attach)
    c = speed.decode_attach("copy", base, None, A)             # the control row: the lora_lite rows' weights, no adapter
    assert ptr(c) == ptr(base) and not any("ll_" in n for n, _ in c.named_modules())


def test_decode_goals_are_over_the_copy_row():
    rows = {"ll:lora": {"decode_over_floor": 1.02}, "merged:lora": {"decode_over_base": 0.99, "decode_over_copy": 1.02}}
    met = {g["goal"]: g["met"] for g in speed.decode_goals(rows)}
    assert met == {"ll:lora decode ÷ its weight-traffic floor": True, "merged:lora decode ÷ base (÷ the copy row)": False}


def test_profiled_memory_counts_the_bytes_live_at_the_steps_peak():
    sizes = {}
    def build():                                                     # the "model": two blocks, one replaced by attach
        return {"w": torch.zeros(500), "v": torch.zeros(300)}
    def attach(m):
        m["v"] = torch.zeros(700)                                    # a replaced base tensor counts as its net change
        a = torch.zeros(1000)                                        # held across steps (as an adapter's tensor)
        def step():
            t = torch.ones(3000, dtype=torch.float64); u = t + t     # the step's peak: t and u live at once
            sizes.update(t=t.nbytes, u=u.nbytes)
            return a
        sizes.update(a=a.nbytes, v=m["v"].nbytes - 300 * 4)
        return step
    m = speed.profiled_memory(build, attach)
    assert m["model"] == (500 + 300) * 4 and m["held"] == sizes["a"] + sizes["v"]
    assert m["step"] == m["held"] + sizes["t"] + sizes["u"]


def test_step_memory_is_exact_and_grows_with_the_batch():
    class A: hidden, layers, seq, vocab, device, threads, config, batch = 64, 1, 32, 128, "cpu", 1, "example", 1
    one, again = speed.mem_run("ll:lora", A), speed.mem_run("ll:lora", A)
    A.batch = 2
    two = speed.mem_run("ll:lora", A)
    assert one == again                                              # two fresh processes, the same bytes
    assert two["step_mb"] > one["step_mb"] and two["peak_mb"] - two["step_mb"] == one["peak_mb"] - one["step_mb"]  # same model


def test_memory_only_update_keeps_step_times(tmp_path):
    row = lambda v, t: {"variant": v, "config": "bench", "ll_ms": t, "ll_over_peft_step": 1.01, "over_lora_step": 1.1,
                        **speed.mem_ratios(old_mem, v)}
    old_mem = {k: {"step_mb": s, "peak_mb": s + 100} for k, s in
               {"base": 10.0, "ll:lora": 20.0, "peft:lora": 20.5, "ll:vera": 21.0, "peft:vera": 20.9}.items()}
    old = {"meta": {}, "step_ms": {"ll:vera": {"median": 700.0}}, "flops": {"ll:vera": 5}, "memory_mb": old_mem,
           "rows": [row("lora", 650.0), row("vera", 700.0)], "init_ratios": {}}
    old["goals"] = speed.goals_of(old["rows"], {})
    p = tmp_path / "r.json"; p.write_text(json.dumps(old))
    mem = {"base": {"step_mb": 8.0, "peak_mb": 108.0}, "ll:vera": {"step_mb": 18.0, "peak_mb": 118.0},
           "peft:vera": {"step_mb": 18.0, "peak_mb": 118.0}}
    rep = {"meta": {"date": "d", "repeats": 9, "memory": "exact"}, "step_ms": {}, "flops": {}, "memory_mb": mem,
           "rows": [{"variant": "vera", "config": "bench", "ll_ms": None, "ll_over_peft_step": None, "over_lora_step": None,
                     **speed.mem_ratios(mem, "vera")}]}
    new = speed.update_rows(p, rep, ["vera"])
    assert new == json.loads(p.read_text())
    vera = next(r for r in new["rows"] if r["variant"] == "vera")
    assert vera["ll_ms"] == 700.0 and vera["ll_over_peft_step"] == 1.01 and new["step_ms"] == old["step_ms"]  # times kept
    assert vera["ll_over_peft_stepmem"] == 1.0 and vera["over_base_stepmem"] == 18.0 / 8.0                   # memory redone
    assert vera["over_lora_stepmem"] == 18.0 / 20.0                                                          # LoRA's kept
    assert new["memory_mb"]["peft:lora"] == old_mem["peft:lora"] and new["memory_mb"]["ll:vera"] == mem["ll:vera"]
    g = {x["goal"]: x for x in new["goals"]}
    assert g["vera step memory: lora_lite ÷ PEFT"]["met"] and g["vera step memory: lora_lite ÷ PEFT"]["value"] == 1.0
    assert new["meta"]["updated"][-1]["sections"] == ["memory"] and new["meta"]["memory"] == "exact"


def test_an_init_only_update_replaces_the_init_times_and_their_goal(tmp_path):
    "`--skip step memory ... --update`: the init section's times and ratios are replaced, the rows and their goals kept."
    old = {"meta": {}, "rows": [], "memory_mb": {}, "init_s": {"ll:pissa": {"median": 1.6}, "peft:pissa": {"median": 1.5}},
           "init_ratios": {"pissa": 1.6 / 1.5}}
    old["goals"] = speed.goals_of([], old["init_ratios"])
    p = tmp_path / "r.json"; p.write_text(json.dumps(old))
    rep = {"meta": {"date": "d", "repeats": 9, "init_repeats": 4}, "step_ms": {}, "memory_mb": {}, "rows": [],
           "init_s": {"ll:pissa": {"median": 1.4}, "peft:pissa": {"median": 1.5}}, "init_ratios": {"pissa": 1.4 / 1.5}}
    new = speed.update_rows(p, rep, ["pissa"], why="more rounds")
    assert new["init_s"]["ll:pissa"]["median"] == 1.4 and new["init_ratios"]["pissa"] == 1.4 / 1.5
    g = {x["goal"]: x for x in new["goals"]}
    assert not {x["goal"]: x for x in old["goals"]}["PiSSA init (pissa): lora_lite ÷ PEFT"]["met"]
    assert g["PiSSA init (pissa): lora_lite ÷ PEFT"]["met"]
    assert new["meta"]["updated"][-1]["sections"] == ["init"] and new["meta"]["updated"][-1]["why"] == "more rounds"
    assert new["meta"]["updated"][-1]["variants"] == ["pissa"]
    assert new["meta"]["updated"][-1]["repeats"] == 4, "an init-only update records the init rounds, not the step rounds"


def test_machine_names_the_cpu_and_its_caches():
    "Each run records the machine (sessions run on different ones; the decode ratios depend on the last-level cache)."
    m = speed.machine()
    assert m["cores"] == os.cpu_count() and m["cpu"]
    if Path("/sys/devices/system/cpu/cpu0/cache/index0").is_dir():
        assert any(k.startswith("L") and k[1].isdigit() for k in m), m


def test_a_step_update_without_flops_keeps_the_files_flop_prediction(tmp_path):
    "`--skip flops ... --update`: the re-timed row's predicted ratio comes from the FLOP counts already in the file."
    row = {"variant": "vera", "ll_over_peft_step": 1.0, "over_lora_step": 1.1, **speed.mem_ratios({}, "vera")}
    old = {"meta": {}, "rows": [{**row, "ll_ms": 700.0, "over_base_flops_predicted": 1.2}], "memory_mb": {},
           "step_ms": {"ll:vera": {"median": 700.0}}, "flops": {"base": 10, "ll:vera": 12}, "init_ratios": {}}
    p = tmp_path / "r.json"; p.write_text(json.dumps(old))
    rep = {"meta": {"date": "d", "repeats": 9}, "step_ms": {"ll:vera": {"median": 650.0}}, "flops": {}, "memory_mb": {},
           "rows": [{**row, "ll_ms": 650.0, "over_base_flops_predicted": None}]}
    vera = next(r for r in speed.update_rows(p, rep, ["vera"])["rows"] if r["variant"] == "vera")
    assert vera["ll_ms"] == 650.0 and vera["over_base_flops_predicted"] == 1.2


def test_cache_sizes_read_as_bytes():
    assert speed.size_bytes("491520K") == 480 * 2**20 and speed.size_bytes("2M") == 2**21 and speed.size_bytes("") == 0
