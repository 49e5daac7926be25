"""A small random GPT-2 in Hugging Face's layout, with transformers' outputs for it, for the GPT-2
loading tests. Writes crates/ferrograd-nn/tests/fixtures/gpt2/:

  config.json, model.safetensors   GPT2LMHeadModel.save_pretrained (2 layers, d 32, 4 heads,
                                   context 64), every parameter moved off its initial value
  tokenizer.json                   a byte-level BPE (GPT-2's kind, 400 tokens) trained on the
                                   start of tinyshakespeare, <|endoftext|> its special token
  reference.json                   for each prompt: its token ids, the logits (T, V) of
                                   GPT2LMHeadModel, and generate's greedy continuation (20 new
                                   tokens, with its cache), as ids and text

Needs torch, transformers and tokenizers (bench/torch_workloads.py installs them in
.venv-bench), and ../shared/data/text/tinyshakespeare.txt:

    .venv-bench/bin/python scripts/torch_reference_gpt2.py
"""
import json
import pathlib

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel

from fixture_io import enc

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/ferrograd-nn/tests/fixtures/gpt2"
TEXT = ROOT.parent / "shared/data/text/tinyshakespeare.txt"
PROMPTS = ["ROMEO:", "First Citizen:\nWe are", "naïve café, 東京 — héllo"]
NEW_TOKENS = 20


def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT.read_text()[:20000]], trainer)
    return tok


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok = tokenizer()
    tok.save(str(OUT / "tokenizer.json"))
    eos = tok.token_to_id("<|endoftext|>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config).eval()
    # Hugging Face starts biases at 0 and norms at (1, 0), and weights small: move every
    # parameter so that each one shows, and scores are far enough apart for greedy choices.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(OUT, safe_serialization=True)
    (OUT / "generation_config.json").unlink(missing_ok=True)

    cases = []
    margin = float("inf")
    for prompt in PROMPTS:
        ids = tok.encode(prompt).ids
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0]
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, pad_token_id=eos, output_scores=True,
                                 return_dict_in_generate=True)
        for s in out.scores:
            top = s[0].topk(2).values
            margin = min(margin, float(top[0] - top[1]))
        new = out.sequences[0, len(ids):].tolist()
        cases.append({"prompt": prompt, "ids": ids, "logits": enc(logits), "greedy": new,
                      "greedy_text": tok.decode(new, skip_special_tokens=True)})
    # A near tie would make the greedy continuation a matter of rounding.
    assert margin > 1e-3, f"greedy choices too close: {margin}"
    (OUT / "reference.json").write_text(json.dumps({"eos": eos, "cases": cases}, ensure_ascii=False))
    print(f"wrote {OUT}: vocabulary {tok.get_vocab_size()}, smallest greedy margin {margin:.4f}")


if __name__ == "__main__":
    main()
