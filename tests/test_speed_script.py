"""benchmarks/speed.py's bookkeeping (no timing): a decode re-measure replaces only the rows it timed; the decode rows'
adapters are moved off init."""
import json, sys
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


def test_move_off_init_changes_only_trainable_tensors():
    m = tiny_qwen3(hidden=64); ll.attach(m, ll.LoRAConfig(r=4))
    before = {n: p.clone() for n, p in m.named_parameters()}
    speed.move_off_init(m)
    moved = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {n for n, p in m.named_parameters() if p.requires_grad} and moved


def test_decode_base_row_shares_the_lora_lite_rows_weights():
    base = tiny_qwen3(hidden=64).eval()
    class A: config = "example"
    b = speed.decode_attach("base", base, None, A)
    m = speed.decode_attach("ll:lora", base, None, A)
    ptr = lambda mod: {n: p.data_ptr() for n, p in mod.named_parameters() if "ll_" not in n}
    assert ptr(b) == ptr(m) == ptr(base)                       # one copy of the weights: the pairs stream the same memory
    assert not any("ll_" in n for n, _ in b.named_parameters())
