"""PyTorch and sacreBLEU reference values for ferrograd-nn's encoder-decoder Transformer and BLEU.
Writes crates/ferrograd-nn/tests/fixtures/seq2seq.json (the first three) and
crates/ferrograd-data/tests/fixtures/bleu.json (bleu):

  decoder_layer_post_norm,  nn.TransformerDecoderLayer (d_model 8, 2 heads, FF 16, GELU, dropout 0,
  decoder_layer_pre_norm    batch_first) in train mode (the slow path), tgt x (B=2, T=5) and memory m
                            (B=2, S=6), with a causal tgt_mask, a tgt_key_padding_mask and a
                            memory_key_padding_mask; parameters (PyTorch's names), inputs, masks,
                            output, and the gradients of sum(out * r) for a stored random r with
                            respect to x, m and every parameter.
  transformer               nn.Transformer (2 encoder + 2 decoder post-norm layers, with its final
                            encoder and decoder LayerNorms), src (2, 6) and tgt (2, 5), the same
                            masks (src_key_padding_mask = memory_key_padding_mask); gradients with
                            respect to src, tgt and every parameter.
  bleu                      sacrebleu.corpus_bleu(hyps, [refs]) with its defaults (13a tokenizer,
                            exp smoothing, one reference stream) for several small corpora: score,
                            n-gram counts and totals, lengths, brevity penalty, and the 13a
                            tokenization of the hypotheses and references.

Masks follow PyTorch's convention: True (1) = masked / padding. They are stored as i64 0/1.

Needs torch and sacrebleu (pip install sacrebleu); no downloads:

    python3 scripts/torch_reference_seq2seq.py
"""
import json
import pathlib

import torch
import torch.nn as nn

from fixture_io import enc, perturbed

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/ferrograd-nn/tests/fixtures"
B, T, S, C, HEADS, FF = 2, 5, 6, 8, 2, 16  # batch, target time, source time, channels, heads, feed-forward


def case(module, forward, inputs, **masks):
    """forward(**inputs) -> out; the gradients of sum(out * r) w.r.t. every input and parameter."""
    inputs = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    out = forward(**inputs)
    r = torch.randn_like(out)
    (out * r).sum().backward()
    return {
        "params": {k: enc(v) for k, v in module.named_parameters()},
        **{k: enc(v) for k, v in inputs.items()}, **{k: enc(m) for k, m in masks.items()},
        "output": enc(out), "r": enc(r),
        "grads": {**{k: enc(v.grad) for k, v in inputs.items()},
                  **{k: enc(v.grad) for k, v in module.named_parameters()}},
    }


def masks():
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # (T, T), True = key j > query i
    tgt_pad = torch.tensor([[False] * T, [False] * 4 + [True] * (T - 4)])  # (B, T): row 1 has 4 tokens
    mem_pad = torch.tensor([[False] * S, [False] * 4 + [True] * (S - 4)])  # (B, S): row 1 has 4 tokens
    return causal, tgt_pad, mem_pad


def decoder_cases():
    causal, tgt_pad, mem_pad = masks()
    cases = {}
    for name, norm_first in [("decoder_layer_post_norm", False), ("decoder_layer_pre_norm", True)]:
        torch.manual_seed(0)
        layer = perturbed(nn.TransformerDecoderLayer(d_model=C, nhead=HEADS, dim_feedforward=FF, dropout=0.0,
                                                     activation="gelu", batch_first=True, norm_first=norm_first))
        layer.train()  # the slow path: padded query rows are computed, not zeroed
        x, m = torch.randn(B, T, C), torch.randn(B, S, C)
        cases[name] = case(layer, lambda input, memory: layer(input, memory, tgt_mask=causal,
                                                              tgt_key_padding_mask=tgt_pad,
                                                              memory_key_padding_mask=mem_pad),
                           {"input": x, "memory": m},
                           tgt_mask=causal, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
        cases[name]["config"] = {"d_model": C, "nhead": HEADS, "dim_feedforward": FF, "activation": "gelu",
                                 "norm_first": norm_first, "layer_norm_eps": layer.norm1.eps}
    return cases


def transformer_case():
    causal, tgt_pad, mem_pad = masks()
    torch.manual_seed(0)
    model = perturbed(nn.Transformer(d_model=C, nhead=HEADS, num_encoder_layers=2, num_decoder_layers=2,
                                     dim_feedforward=FF, dropout=0.0, activation="gelu", batch_first=True))
    model.train()
    src, tgt = torch.randn(B, S, C), torch.randn(B, T, C)
    out = case(model, lambda src, tgt: model(src, tgt, tgt_mask=causal, src_key_padding_mask=mem_pad,
                                             tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad),
               {"src": src, "tgt": tgt},
               tgt_mask=causal, src_key_padding_mask=mem_pad, tgt_key_padding_mask=tgt_pad,
               memory_key_padding_mask=mem_pad)
    out["config"] = {"d_model": C, "nhead": HEADS, "num_encoder_layers": 2, "num_decoder_layers": 2,
                     "dim_feedforward": FF, "activation": "gelu", "norm_first": False,
                     "layer_norm_eps": model.encoder.norm.eps,
                     "final_norms": ["encoder.norm", "decoder.norm"]}
    return {"transformer": out}


BLEU_CASES = {
    # English with punctuation: some identical, some partly matching, the last hypothesis much
    # shorter than its reference, so sys_len < ref_len and the brevity penalty is below 1.
    "sentences": (
        ["The cat sat on the mat.",
         "Hello, world!",
         "A quick brown fox jumps over a lazy dog.",
         "It's raining cats and dogs today, isn't it?",
         "We met at 10:30 (room 4B) and paid $3.99.",
         "The results were good."],
        ["The cat sat on the mat.",
         "Hello, world!",
         "The quick brown fox jumps over the lazy dog.",
         "It is raining cats and dogs today, isn't it?",
         "We met at 10:30 (room 4B) and paid $3.99 each.",
         "The results of the experiment were surprisingly good, and everyone was pleased."],
    ),
    # Code-like strings, where the 13a rules for punctuation, digits, periods, commas and dashes
    # decide the tokens: "+", "*", "/", "(", ")" always split; "." and "," split unless between
    # digits; "-" splits only after a digit.
    "code": (
        ["7+12*3", "(3-1)*4", "10/2", "a.b,c", "3.5 - 2", "x-3 = y", "1,000.5+2", "f(x)=x^2",
         "1.2.3", "a..b", "snake_case[i]", "{k: v}"],
        ["7+12*2", "(3-1)*4", "10/5", "a.b,c", "3.5 - 2", "x-3 = z", "1,000.5+2", "f(x)=x^3",
         "1.2.3", "a..b", "snake_case[j]", "{k: v}"],
    ),
    # Unigram to trigram matches but not a single 4-gram match: exp smoothing fills in p4.
    "no_4gram_match": (
        ["the cat sat down", "a dog ran off quickly", "birds fly high over hills"],
        ["the cat sat up", "a dog ran away quickly", "birds fly high above hills"],
    ),
    # Hypotheses equal to the references: 100 (up to rounding: exp of a mean of logs).
    "perfect": (
        ["Hello, world!", "The quick brown fox jumps over the lazy dog.", "7+12*3 = 43"],
        ["Hello, world!", "The quick brown fox jumps over the lazy dog.", "7+12*3 = 43"],
    ),
}
TOKENIZED = ("sentences", "code")


def bleu_cases():
    import sacrebleu
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    tok = Tokenizer13a()
    cases = {}
    for name, (hyps, refs) in BLEU_CASES.items():
        b = sacrebleu.corpus_bleu(hyps, [refs])
        cases[name] = {"hypotheses": hyps, "references": refs, "score": b.score, "counts": list(b.counts),
                       "totals": list(b.totals), "precisions": list(b.precisions), "sys_len": b.sys_len,
                       "ref_len": b.ref_len, "bp": b.bp}
        if name in TOKENIZED:
            cases[name]["tokenized_hypotheses"] = [tok(h) for h in hyps]
            cases[name]["tokenized_references"] = [tok(r) for r in refs]
    assert cases["sentences"]["bp"] < 1.0
    assert cases["no_4gram_match"]["counts"][3] == 0 and cases["no_4gram_match"]["counts"][2] > 0
    assert abs(cases["perfect"]["score"] - 100.0) < 1e-9  # sacreBLEU gives 100.00000000000004 here
    metric = sacrebleu.BLEU()  # the same defaults, for the signature
    metric.corpus_score(*BLEU_CASES["perfect"][:1], [BLEU_CASES["perfect"][1]])
    signature = str(metric.get_signature())
    return {"bleu": {"sacrebleu": sacrebleu.__version__, "signature": signature,
                     "tokenize": "13a", "smooth_method": "exp", "cases": cases}}


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    print(f"wrote {path} ({path.stat().st_size} bytes)")


write(OUT / "seq2seq.json", {"torch": torch.__version__, **decoder_cases(), **transformer_case()})
write(ROOT / "crates/ferrograd-data/tests/fixtures/bleu.json", bleu_cases()["bleu"])
