#!/usr/bin/env python
"""bnb-smoke: every registered variant on a 4-bit and an 8-bit base for a few training steps, one line per case.

A tiny Qwen3 (widths multiples of 64, as bitsandbytes' CPU dequantize needs) is built from a config, saved, and
reloaded quantized the way users do it (`from_pretrained(..., quantization_config=BitsAndBytesConfig(...))`).
Each case: attach, a few AdamW steps (loss must be finite, every adapter tensor must get a gradient), save,
detach, load, and the reloaded adapter must reproduce the logits. Works on CPU or CUDA. Exit code 1 if any case fails."""
import argparse, os, sys, tempfile, time, traceback, warnings
warnings.filterwarnings("ignore")   # bitsandbytes warns on every 8-bit matmul cast
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="all", help="comma list or 'all'")
    ap.add_argument("--quant", default="4bit,8bit")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    d = tempfile.mkdtemp()
    tiny_qwen3(hidden=128).save_pretrained(d)
    qcfg = {"4bit": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
            "8bit": BitsAndBytesConfig(load_in_8bit=True)}
    names = sorted(ll.VARIANTS) if a.variants == "all" else a.variants.split(",")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 128, (2, 16), generator=g).to(a.device)
    calib = [{"input_ids": torch.randint(0, 128, (2, 16), generator=g).to(a.device)} for _ in range(2)]
    failed = 0
    for q in a.quant.split(","):
        for name in names:
            t0 = time.time()
            try:
                m = AutoModelForCausalLM.from_pretrained(d, quantization_config=qcfg[q], device_map=a.device)
                cfg = ll.get_config(name, **ll.VARIANTS[name].example)   # the variant's small test config
                ll.attach(m, cfg, calibration_data=calib if ll.VARIANTS[name].needs_calibration else None)
                params = [p for p in m.parameters() if p.requires_grad]
                opt = torch.optim.AdamW(params, lr=1e-2)
                m.train(); losses = []
                for _ in range(a.steps):
                    loss = m(ids, labels=ids).loss
                    loss.backward()
                    assert torch.isfinite(loss), "loss is not finite"
                    assert all(p.grad is not None for p in params), "an adapter tensor got no gradient"
                    opt.step(); opt.zero_grad(); losses.append(loss.item())
                m.eval()
                with torch.no_grad(): y = m(ids).logits
                f = ll.save(m, os.path.join(d, f"{name}-{q}.safetensors")); ll.detach(m); ll.load(m, f)
                with torch.no_grad(): assert torch.equal(m(ids).logits, y), "reloaded adapter changed the logits"
                print(f"{name:18s} {q}  ok    loss {losses[0]:.3f} -> {losses[-1]:.3f}  {time.time() - t0:5.1f}s", flush=True)
            except Exception as e:
                failed += 1
                print(f"{name:18s} {q}  FAIL  {type(e).__name__}: {e}", flush=True)
                if os.environ.get("BNB_SMOKE_TRACE"): traceback.print_exc()
    print(f"bnb-smoke: {len(names) * len(a.quant.split(',')) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
