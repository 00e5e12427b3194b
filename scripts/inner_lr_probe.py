"""Per-group inner learning rates on the memorisation ceiling (adapt on T's own gold solution, K SGD
steps, then answer greedily), the first N problems of minimath-dev, all adapted together.

    python scripts/inner_lr_probe.py 42 "lr=3,K=2;lr=3,K=2,down_proj=0.3;lr=3,K=4" out.json

Each setting: lr, K, A / B (multipliers of the lora_A / lora_B rates), and any substring of a
parameter name (q_proj, layers.0., ...) with its multiplier."""
import json, sys, time, torch
from mass.models import load_model, attach_lora, LoraSettings, SamplingConfig, generate
from mass.inner import lora_params
from mass.batched import stack_params, batched_example_losses, per_row_lora
from mass.adaptation import example_batch
from mass.headroom import as_example
from mass.tasks import load_task
from mass.checker import is_equivalent

def main():
    global model, phi0, task, probs, batch, rows, s
    torch.manual_seed(0)
    base, tok = load_model(None, "float32", "cpu", "sdpa")
    lora = LoraSettings()
    model = attach_lora(base, rank=lora.rank, alpha=lora.alpha, target_modules=lora.targets, seed=0)
    phi0 = lora_params(model)
    task = load_task("minimath-dev")
    probs = task.load(None)[:int(sys.argv[1]) if len(sys.argv) > 1 else 42]
    batch = example_batch(tok, [as_example(p) for p in probs], "cpu")
    rows = torch.arange(len(probs))
    s = torch.ones(len(probs))

    def run(mult, lr=1.0, K=2):
        phi = stack_params(phi0, len(probs))
        for _ in range(K):
            leaves = {n: p.clone().requires_grad_(True) for n, p in phi.items()}
            with torch.enable_grad():
                loss = (s * batched_example_losses(model, leaves, rows, batch)).sum()
                grads = torch.autograd.grad(loss, list(leaves.values()))
            phi = {n: (p - lr * mult(n) * g).detach() for (n, p), g in zip(leaves.items(), grads)}
        texts = generate(model, tok, [task.render_prompt(p, False) for p in probs], SamplingConfig(max_new_tokens=320),
                         around_batch=lambda idx: per_row_lora(model, phi, rows[idx]))
        return sum(bool(is_equivalent(p.answer, task.extract_answer(t))) for p, t in zip(probs, texts)) / len(probs)

    def group(name_part, x):
        return lambda n: x if name_part in n else 1.0

    configs = {"uniform": lambda n: 1.0, "all x2": lambda n: 2.0}
    for g in ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lora_A", "lora_B",
              "layers.0.", "layers.1.", "layers.2.", "layers.3."]:
        configs[f"{g} x4"] = group(g, 4.0)
    out = {}
    for name in (sys.argv[2].split(";") if len(sys.argv) > 2 else configs):
        kv = dict(x.split("=") for x in name.split(","))  # lr=3,K=2,B=4,A=1
        def mult(n, kv=kv):
            x = float(kv.get("B", 1)) if "lora_B" in n else float(kv.get("A", 1))
            for key, v in kv.items():
                if key not in ("lr", "K", "A", "B") and key in n:
                    x *= float(v)
            return x
        t = time.time(); out[name] = run(mult, float(kv.get("lr", 1)), int(kv.get("K", 2))); print(f"{name:16s} {100*out[name]:.1f}  ({time.time()-t:.0f}s)", flush=True)
    json.dump(out, open(sys.argv[3] if len(sys.argv) > 3 else "inner_lr_probe.json", "w"), indent=1)

if __name__ == '__main__':
    main()
