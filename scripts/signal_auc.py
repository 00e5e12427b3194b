"""Does the gold meta-gradient prefer right synthesised examples? On the first N held-out problems
(minimath-dev) at uniform weights: within-T AUC of -dL/ds_i against correctness, and of each
example's answer NLL (below 0.5: right examples are the likelier ones).

    python scripts/signal_auc.py 24 3.0 2      # N problems, inner lr, K
"""
import sys
import torch
from mass.models import load_model, attach_lora, LoraSettings, make_sft_batch
from mass.inner import lora_params, example_losses
from mass.metagrad import meta_grad_hybrid
from mass.adaptation import example_batch, synth_sampling_default
from mass.synthesis import synthesise
from mass.meta_train import graded_examples
from mass.tasks import load_task
from mass.training import split_training_problems
from mass.prompts import solve_prompt
from mass.scorer import within_group_auc

def main():
    n, lr, K = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    base, tok = load_model(None, "float32", "cpu", attn_implementation="mass_math")
    torch.manual_seed(0)
    lora = LoraSettings()
    model = attach_lora(base, lora.rank, lora.alpha, lora.targets)
    phi0 = lora_params(model)
    _, held = split_training_problems(load_task("minimath-meta"), None, 100, 4)
    held = held[:n]
    gen = torch.Generator().manual_seed(1)
    syn = synthesise(model, tok, [t.problem for t in held], 12, synth_sampling_default(), gen)
    groups_sig, groups_nll = [], []
    for t, sy in zip(held, syn):
        if len(sy.examples) < 2: continue
        right = graded_examples(t, sy.examples)
        if right is None or all(right) or not any(right): continue
        batch = example_batch(tok, sy.examples, "cpu")
        gold = make_sft_batch(tok, [solve_prompt(t.problem)], [f" {t.solution}"], "cpu")
        s = torch.full((len(sy.examples),), 1 / len(sy.examples))
        mg = meta_grad_hybrid(model, phi0, batch, s, lr, K, lambda phi: example_losses(model, phi, gold).mean())
        with torch.no_grad():
            nll = example_losses(model, phi0, batch)
        groups_sig.append(([float(-d) for d in mg.ds], right))
        groups_nll.append(([float(x) for x in nll], right))
        print(t.id, "right", sum(right), "/", len(right), "sig", [round(float(-d) * 1e3, 2) for d in mg.ds], flush=True)
    print("signal AUC (-dL/ds vs right):", within_group_auc(groups_sig))
    print("NLL AUC (answer NLL vs right; <0.5: right ones are more likely):", within_group_auc(groups_nll))

if __name__ == "__main__":
    main()
