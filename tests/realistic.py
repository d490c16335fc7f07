"""Helpers for the methods that read the base weight (MiSS-Bat, PEANuT, GLoRA): a tiny model with a trained-like weight
spectrum, PEFT-vs-lora_lite loss curves from one init (`peft_vs_ours_curves`, or `curves` for two models already built),
and the 4/8-bit checks for a given config."""
import tempfile, warnings
import torch
from torch import nn
import lora_lite as ll
from lora_lite.checks import tiny_qwen3


def realistic_qwen3(hidden=64, seed=0, **kw):
    "tiny_qwen3 whose linear weights have a trained-like spectrum (σ_k ∝ k^-0.6, random singular vectors, the init's norm); biases N(0, 0.1)."
    m = tiny_qwen3(hidden=hidden, seed=seed, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, mod in m.named_modules():
            if isinstance(mod, nn.Linear) and "lm_head" not in n:
                d_out, d_in = mod.weight.shape
                k = min(d_out, d_in)
                U, V = (torch.linalg.qr(torch.randn(d, k, generator=g))[0] for d in (d_out, d_in))
                s = torch.arange(1, k + 1).float() ** -0.6
                mod.weight.copy_((U * (s / s.norm() * mod.weight.norm())) @ V.T)
                if mod.bias is not None: mod.bias.normal_(0, 0.1, generator=g)   # transformers zeroes biases at init
    return m


def batches(n=6, bs=2, T=16, vocab=128, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (bs, T), generator=g) for _ in range(n)]


def train_curve(model, data, lr=1e-3, weight_decay=0.0, seed=None):
    "Losses of AdamW steps on the LM loss, one per batch; `seed`: the global RNG's, first (for methods that sample while training)."
    if seed is not None: torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    model.train(); out = []
    for ids in data:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward(); opt.step(); opt.zero_grad(); out.append(loss.item())
    model.eval()
    return out


def curves(models, ids, steps=5, lr=1e-2, weight_decay=0.01, seed=None) -> list:
    "Loss tensors of `steps` AdamW steps (default weight decay) on batch `ids`, for each of `models` (ours, PEFT's) in turn; each ends in eval mode."
    return [torch.tensor(train_curve(m, [ids] * steps, lr, weight_decay, seed)) for m in models]


def peft_vs_ours_curves(peft_cfg, make_model=realistic_qwen3, lr=1e-3, steps=6):
    "(PEFT's losses, ours) training from the same init: PEFT's fresh adapter, imported into lora_lite with from_peft."
    import peft
    pm = peft.get_peft_model(make_model(), peft_cfg)
    with tempfile.TemporaryDirectory() as d:
        pm.save_pretrained(d)
        ours = make_model(); ll.from_peft(ours, d)
    data = batches(1) * steps                                   # one batch: the loss must fall
    return train_curve(pm, data, lr), train_curve(ours, data, lr)


# ---------------------------------------------------------------- 4-bit / 8-bit bases
QUANTS = {"nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
          "int8": dict(load_in_8bit=True)}
HIDDEN = 128   # every 4-bit width a multiple of 64


def load_q(d, quant):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_pretrained(d, quantization_config=BitsAndBytesConfig(**QUANTS[quant]), device_map="cpu")


def quant_check(cfg, quant, **model_kw) -> dict:
    "Attach `cfg` to a 4/8-bit tiny Qwen3: identity at init, finite grads, parity with the dequantized fp32 model, exact detach."
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    with tempfile.TemporaryDirectory() as d:
        src = tiny_qwen3(hidden=HIDDEN, **model_kw)
        with torch.no_grad():                                          # transformers zeroes biases at init: make them matter
            for n, p in src.named_parameters():
                if n.endswith(".bias"): p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(n)))
        src.save_pretrained(d)
        m = load_q(d, quant).train()
        ref = tiny_qwen3(hidden=HIDDEN, **model_kw).train()           # fp32, with the dequantized weights
        qmods = dict(m.named_modules())
        with torch.no_grad():
            for n, p in ref.named_parameters():
                mod, _, leaf = n.rpartition(".")
                q = type(qmods[mod]).__module__.startswith("bitsandbytes") and leaf == "weight"
                p.copy_(ll.dense_weight(qmods[mod]) if q else m.get_parameter(n).float())
        with torch.no_grad(): y0 = m(ids).logits
        base = {k: v.detach().clone() for k, v in m.state_dict().items()}
        ll.attach(m, cfg)
        with torch.no_grad(): init = (m(ids).logits - y0).abs().max().item()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in m.parameters():
                if p.requires_grad: p.add_(0.05 * torch.randn(p.shape, generator=g))
        m(ids, labels=ids).loss.backward()
        grads = [p.grad for p in m.parameters() if p.requires_grad]
        finite = all(gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0 for gr in grads)
        ll.save(m, f"{d}/a.safetensors"); ll.load(ref, f"{d}/a.safetensors")
        with torch.no_grad():
            yq, yr = m(ids).logits, ref(ids).logits
            with ll.disabled(m), ll.disabled(ref): yq0, yr0 = m(ids).logits, ref(ids).logits
        effect = ((yq - yq0) - (yr - yr0)).norm().item() / (yr - yr0).norm().item()
        ll.detach(m)
        with torch.no_grad(): exact = torch.equal(m(ids).logits, y0)
        untouched = all(torch.equal(v, m.state_dict()[k]) for k, v in base.items())
    return dict(init=init, finite_grads=finite, effect_rel_err=effect, detach_exact=exact, base_untouched=untouched)
