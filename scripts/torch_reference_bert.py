"""PyTorch reference values for ferrograd-nn's attention, LayerNorm, TransformerBlock and BERT.
Writes two files in crates/ferrograd-nn/tests/fixtures:

  transformer.json  small cases (B=2, T=5, C=8, f32): nn.MultiheadAttention with a key padding
                    mask and with a causal mask, nn.LayerNorm, nn.TransformerEncoderLayer post-norm
                    and pre-norm; inputs, parameters (PyTorch's names), outputs, and the gradients
                    of sum(out * r) for a stored random r.
  minilm.json       all-MiniLM-L6-v2: sentence-transformers embeddings of varied sentences, and
                    BertModel's last_hidden_state for three of them (padded together) and for a
                    (question, context) pair.

Needs torch, transformers and sentence-transformers, and the model directory (no download):

    HF_HUB_OFFLINE=1 python3 scripts/torch_reference_bert.py [MODEL_DIR]

MODEL_DIR defaults to ../shared/models/all-MiniLM-L6-v2 next to the repository.
"""
import json
import pathlib
import sys

import torch
import torch.nn as nn

from fixture_io import enc, perturbed

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/ferrograd-nn/tests/fixtures"
MODEL = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/models/all-MiniLM-L6-v2"
B, T, C, HEADS = 2, 5, 8, 2  # batch, time, channels, heads


def case(module, forward, x, **masks):
    """forward(x) -> out; the gradients of sum(out * r) w.r.t. x and every parameter."""
    x = x.clone().requires_grad_()
    out = forward(x)
    r = torch.randn_like(out)
    (out * r).sum().backward()
    return {
        "params": {k: enc(v) for k, v in module.named_parameters()},
        "input": enc(x), **{k: enc(m) for k, m in masks.items()},
        "output": enc(out), "r": enc(r),
        "grads": {"input": enc(x.grad), **{k: enc(v.grad) for k, v in module.named_parameters()}},
    }


def transformer_cases():
    torch.manual_seed(0)
    # Key padding, PyTorch's convention: True (1) = a padding key, ignored. Row 1 has 3 tokens.
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])  # (B, T)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # (T, T), True = masked (key j > query i)
    cases = {}

    mha = perturbed(nn.MultiheadAttention(embed_dim=C, num_heads=HEADS, batch_first=True))
    x = torch.randn(B, T, C)
    cases["mha_key_padding"] = case(mha, lambda x: mha(x, x, x, key_padding_mask=pad, need_weights=False)[0],
                                    x, key_padding_mask=pad)
    mha = perturbed(nn.MultiheadAttention(embed_dim=C, num_heads=HEADS, batch_first=True))
    x = torch.randn(B, T, C)
    cases["mha_causal"] = case(mha, lambda x: mha(x, x, x, attn_mask=causal, need_weights=False)[0],
                               x, attn_mask=causal)

    ln = perturbed(nn.LayerNorm(C))
    cases["layer_norm"] = case(ln, ln, torch.randn(B, T, C))
    cases["layer_norm"]["eps"] = ln.eps

    for name, norm_first in [("encoder_layer_post_norm", False), ("encoder_layer_pre_norm", True)]:
        layer = perturbed(nn.TransformerEncoderLayer(d_model=C, nhead=HEADS, dim_feedforward=16, dropout=0.0,
                                                     activation="gelu", batch_first=True, norm_first=norm_first))
        layer.train()  # the slow path: padded query rows are computed, not zeroed
        cases[name] = case(layer, lambda x: layer(x, src_key_padding_mask=pad), torch.randn(B, T, C),
                           key_padding_mask=pad)
        cases[name]["config"] = {"d_model": C, "nhead": HEADS, "dim_feedforward": 16, "activation": "gelu",
                                 "norm_first": norm_first, "layer_norm_eps": layer.norm1.eps}
    return {"torch": torch.__version__, **cases}


SENTENCES = [
    "a",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "I LOVE MACHINE LEARNING!!!",
    "Differentiable programming: gradients of ordinary programs.",
    "The meeting is at 10:30 on 2024-03-15, room 4B.",
    "It costs $3.99 (or €4.20) per kilogram; 100 kg is 399 dollars.",
    "Café crème, naïve façade, jalapeño, Ångström and Straße.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "Emoji are tokens too 🙂👍🏽",
    "e = mc^2, and π ≈ 3.14159",
    "Don't stop—believe it's \"possible\", she said.",
    "unaffable tokenization of antidisestablishmentarianism",
    "https://example.com/path?q=rust&lang=en",
    "   leading and trailing spaces   ",
    "The cat sat on the mat.",
    "A cat was sitting on a rug.",
    "Stock markets fell sharply after the announcement.",
    "How do I reset my password?",
    "Neural networks are trained by gradient descent on a loss that measures how far the "
    "predictions fall from the targets, and backpropagation computes the gradient of that loss "
    "with respect to every weight in one backward pass through the computation graph, reusing "
    "the intermediate values kept from the forward pass; modern libraries do this automatically "
    "for arbitrary programs built out of differentiable operations. Training then takes many small "
    "steps downhill, each on a random mini-batch of examples, until the held-out error stops improving.",
    "The mitochondria is the powerhouse of the cell.",
    "Mixed CaSe WoRdS and ALLCAPS and lowercase",
    "1 2 3 4 5 6 7 8 9 10",
]
TOKEN_LEVEL = [1, 8, 6]  # short, medium with numbers, medium: padded together
PAIR = ("What is the capital of France?", "Paris is the capital and most populous city of France.")


def minilm():
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertModel

    st = SentenceTransformer(str(MODEL), device="cpu")
    embeddings = torch.from_numpy(st.encode(SENTENCES, convert_to_numpy=True))  # (N, 384), normalized by modules.json
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-5)
    tok = AutoTokenizer.from_pretrained(str(MODEL))
    ids = tok(SENTENCES, truncation=True, max_length=st.max_seq_length)["input_ids"]

    bert = BertModel.from_pretrained(str(MODEL), add_pooling_layer=False).eval()

    def hidden(batch):
        with torch.no_grad():
            h = bert(**batch).last_hidden_state  # (B, T, 384)
        return {"input_ids": enc(batch["input_ids"]), "token_type_ids": enc(batch["token_type_ids"]),
                "attention_mask": enc(batch["attention_mask"]), "last_hidden_state": enc(h)}

    token_level = hidden(tok([SENTENCES[i] for i in TOKEN_LEVEL], padding=True, return_tensors="pt"))
    pair = hidden(tok([PAIR[0]], [PAIR[1]], return_tensors="pt"))
    return {
        "model": MODEL.name, "torch": torch.__version__, "max_seq_length": st.max_seq_length,
        "pooling": "mean over attention_mask, then L2-normalize",
        "sentences": SENTENCES, "ids": ids, "embeddings": enc(embeddings),
        "token_level": {"sentence_indices": TOKEN_LEVEL, **token_level},
        "pair": {"question": PAIR[0], "context": PAIR[1], **pair},
    }


OUT.mkdir(parents=True, exist_ok=True)
for name, make in [("transformer.json", transformer_cases), ("minilm.json", minilm)]:
    path = OUT / name
    path.write_text(json.dumps(make()))
    print(f"wrote {path} ({path.stat().st_size} bytes)")
