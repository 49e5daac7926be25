#!/usr/bin/env python3
"""Peak memory of ferrograd's commands on hostile input, against the same command on good input.

Each bad input (a checkpoint or config.json claiming absurd sizes, a safetensors header that
lies about its tensors, an IDX header claiming 10^9 images, a device as a file, huge flags) is
run under /usr/bin/time -v. It passes when the command refuses it (exit 1 or 2: no panic, abort
or kill), within 10 s, with a peak resident size at most twice that of the same command on the
good input it was made from.

    cargo build --release -p ferrograd-cli
    python3 scripts/memory_on_bad_input.py [--binary target/release/ferrograd]

Standard library only; BERT's cases use ../shared/models/all-MiniLM-L6-v2 when it is there.
"""

import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HUGE = 10**9


def measure(binary, args):
    """(exit code, peak RSS in KiB, seconds, last line of stderr) of one run."""
    start = time.time()
    run = subprocess.run(
        ["/usr/bin/time", "-v", binary, *args], capture_output=True, text=True, timeout=120
    )
    seconds = time.time() - start
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    said = [l for l in run.stderr.splitlines()
            if l and not l.startswith("\t") and not l.startswith("Command exited")]
    said = [l for l in said if l.startswith("error")] or said
    return run.returncode, peak, seconds, said[0] if said else ""


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_safetensors(path, header, body, claimed_length=None):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", claimed_length if claimed_length is not None else len(text)))
        f.write(text + body)


def with_config(src, dst, change):
    """A copy of checkpoint `src` whose metadata config `change` edits."""
    header, body = read_safetensors(src)
    config = json.loads(header["__metadata__"]["config"])
    change(config)
    header["__metadata__"]["config"] = json.dumps(config)
    write_safetensors(dst, header, body)


def lying_headers(src, out_dir):
    """Copies of `src` whose header lies: a shape, an offset, its own length."""
    header, body = read_safetensors(src)
    name = next(k for k in header if k != "__metadata__")
    cases = {}
    shape = json.loads(json.dumps(header))
    shape[name]["shape"] = [HUGE, HUGE]
    offsets = json.loads(json.dumps(header))
    offsets[name]["data_offsets"] = [0, 10**12]
    for label, h, length in [
        ("a tensor's shape is 10^9 × 10^9", shape, None),
        ("a tensor's data ends at 10^12", offsets, None),
        ("the header's length is 10^12", header, 10**12),
    ]:
        path = os.path.join(out_dir, f"lie{len(cases)}.safetensors")
        write_safetensors(path, h, body, length)
        cases[label] = path
    return cases


def idx_files(folder, images, claimed):
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(0)
    with open(os.path.join(folder, "t10k-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, claimed, 28, 28))
        f.write(bytes(rng.randrange(256) for _ in range(images * 28 * 28)))
    with open(os.path.join(folder, "t10k-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 0x801, claimed))
        f.write(bytes(rng.randrange(10) for _ in range(images)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default="target/release/ferrograd")
    parser.add_argument("--model", default="../shared/models/all-MiniLM-L6-v2")
    a = parser.parse_args()
    binary = os.path.abspath(a.binary)
    tmp = tempfile.mkdtemp(prefix="ferrograd-memory-")
    j = lambda *p: os.path.join(tmp, *p)
    must = lambda args: subprocess.run([binary, *args], check=True, capture_output=True)

    # Good inputs, made here.
    with open(j("text.txt"), "w") as f:
        f.write("to be or not to be, that is the question\n" * 300)
    must(["train", "lm", "--data", j("text.txt"), "--steps", "2", "--embed", "16",
          "--hidden", "64", "--checkpoint", j("lm.safetensors"), "--out", j("runs")])
    with open(j("pairs.tsv"), "w") as f:
        rng = random.Random(1)
        for _ in range(300):
            x, y = rng.randrange(10), rng.randrange(10)
            f.write(f"{x} plus {y}\t{x + y}\n")
    must(["train", "seq2seq", "--data", j("pairs.tsv"), "--steps", "2", "--dim", "16",
          "--ff", "32", "--heads", "2", "--layers", "1", "--checkpoint", j("s2s.safetensors"),
          "--out", j("runs")])
    idx_files(j("mnist-good"), 200, 200)
    idx_files(j("mnist-bad"), 200, HUGE)

    generate = lambda ck: ["generate", "--checkpoint", ck, "--prompt", "to", "--tokens", "5"]
    translate = lambda ck: ["translate", "--checkpoint", ck, "1 plus 2"]
    mnist = lambda d: ["train", "mnist", "--data", d, "--train-images", "100", "--epochs", "1",
                       "--out", j("runs")]
    groups = []  # (good args, [(label, bad args)])

    lm_bad = []
    for field in ["embed", "hidden", "layers"]:
        path = j(f"lm-{field}.safetensors")
        with_config(j("lm.safetensors"), path, lambda c: c.__setitem__(field, HUGE))
        lm_bad.append((f"lm config {field} = 10^9", generate(path)))
    # Within every per-field bound, but more values than the file holds.
    tensors = len(read_safetensors(j("lm.safetensors"))[0]) - 1
    with_config(j("lm.safetensors"), j("lm-deep.safetensors"),
                lambda c: c.__setitem__("layers", tensors))
    lm_bad.append((f"lm config layers = {tensors} (its tensors)", generate(j("lm-deep.safetensors"))))
    for label, path in lying_headers(j("lm.safetensors"), tmp).items():
        lm_bad.append((f"lm checkpoint: {label}", generate(path)))
    lm_bad.append(("generate --checkpoint /dev/zero", generate("/dev/zero")))
    groups.append((generate(j("lm.safetensors")), lm_bad))

    s2s_bad = []
    for field in ["dim", "ff", "heads", "encoder_layers", "decoder_layers", "max_positions",
                  "source_vocab", "target_vocab"]:
        path = j(f"s2s-{field}.safetensors")
        with_config(j("s2s.safetensors"), path, lambda c: c["model"].__setitem__(field, HUGE))
        s2s_bad.append((f"seq2seq config {field} = 10^9", translate(path)))
    s2s_bad.append(("translate --beam 10^6", translate(j("s2s.safetensors")) + ["--beam", "1000000"]))
    groups.append((translate(j("s2s.safetensors")), s2s_bad))

    groups.append((mnist(j("mnist-good")), [("IDX header claims 10^9 images", mnist(j("mnist-bad")))]))

    train_lm = ["train", "lm", "--data", j("text.txt"), "--steps", "1", "--out", j("runs")]
    groups.append((train_lm, [(f"train lm {flag} 10^9", train_lm + [flag, str(HUGE)])
                              for flag in ["--batch-size", "--embed", "--hidden", "--layers"]]))

    if os.path.isdir(a.model):
        bert_bad = []
        for field, value in [("num_hidden_layers", HUGE), ("intermediate_size", HUGE),
                             ("vocab_size", HUGE), ("max_position_embeddings", HUGE),
                             ("type_vocab_size", HUGE), ("hidden_size", HUGE),
                             ("layer_norm_eps", -1)]:
            folder = j(f"bert-{field}")
            os.makedirs(folder)
            for name in os.listdir(a.model):
                src = os.path.join(os.path.abspath(a.model), name)
                if name != "config.json":
                    os.symlink(src, os.path.join(folder, name))
            with open(os.path.join(a.model, "config.json")) as f:
                config = json.load(f)
            config[field] = value
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump(config, f)
            bert_bad.append((f"BERT config.json {field} = {value}", ["embed", "--model", folder, "a sentence"]))
        groups.append((["embed", "--model", a.model, "a sentence"], bert_bad))
    else:
        print(f"skipped BERT: {a.model} is absent (see DATA.md)")

    failed = 0
    print(f"{'input':46} {'exit':>4} {'peak MiB':>9} {'good MiB':>9} {'s':>5}  message")
    for good, bad in groups:
        code, base, _, said = measure(binary, good)
        if code != 0:
            sys.exit(f"the good run failed: {' '.join(good)}: {said}")
        for label, args in bad:
            code, peak, seconds, said = measure(binary, args)
            ok = code in (1, 2) and seconds < 10 and peak <= 2 * base
            failed += not ok
            print(f"{label:46} {code:>4} {peak / 1024:>9.1f} {base / 1024:>9.1f} {seconds:>5.2f}"
                  f"  {'' if ok else 'FAIL '}{said[:90]}")
    shutil.rmtree(tmp)
    print(f"{failed} of {sum(len(b) for _, b in groups)} bad inputs failed the bound")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
