"""Data-parallel training against one process, side by side on this machine: each round runs
`ferrograd bench W --json` (1 rank, every core its thread) and `mpirun -np N ferrograd bench W
--distributed --json` (N ranks sharing the cores), in alternating order, and prints the ratio
of global throughputs (N ranks / 1 rank) per round and its median.

    cargo build --release -p ferrograd-cli --features mpi
    python3 bench/distributed.py W2 W3 W7 --rounds 5 [--ranks 2] [--ours BIN] [--torch]
    python3 bench/distributed.py allreduce [--ranks 2]   # all-reduce time, 1 KiB to 64 MiB

With --torch each round also runs PyTorch DDP with as many ranks (`torchrun`, gloo, through
bench/torch_workloads.py, whose virtual environment it uses) and prints ferrograd's N ranks
against PyTorch's N ranks.
"""
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "data" / "mnist"
KEY = {"W2": "train_images_per_s", "W3": "train_images_per_s", "W7": "train_tokens_per_s"}
# Root in a container: Open MPI refuses to start without these.
ENV = dict(
    os.environ,
    OMPI_ALLOW_RUN_AS_ROOT="1",
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
)


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=ENV).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench(binary, workload, ranks):
    cmd = [binary, "bench", workload, "--json"]
    if workload in ("W2", "W3") and MNIST.exists():
        cmd += ["--data", str(MNIST)]
    if ranks > 1:
        cmd = ["mpirun", "-np", str(ranks)] + cmd + ["--distributed"]
    return run(cmd)


def torch_ddp(workload, ranks):
    """PyTorch DDP's global throughput with `ranks` ranks (torch_workloads.py installs torch
    into .venv-bench when it runs alone first)."""
    torchrun = ROOT / ".venv-bench" / "bin" / "torchrun"
    if not torchrun.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "torch_workloads.py"), "W1"], check=True)
    script = str(ROOT / "bench" / "torch_workloads.py")
    return run([str(torchrun), "--nproc-per-node", str(ranks), script, workload, "--json"])


def option(args, name, default):
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i : i + 2]
        return value
    return default


def main():
    args = sys.argv[1:]
    rounds = int(option(args, "--rounds", 5))
    ranks = int(option(args, "--ranks", 2))
    binary = option(args, "--ours", str(ROOT / "target" / "release" / "ferrograd"))
    torch = "--torch" in args
    args = [a for a in args if a != "--torch"]
    if not args:
        sys.exit(__doc__)
    if args == ["allreduce"]:
        r = run(["mpirun", "-np", str(ranks), binary, "bench", "allreduce", "--distributed", "--json"])
        print(f"| bytes | {ranks} ranks: time (µs) | bus bandwidth (GB/s) |")
        print("| ---: | ---: | ---: |")
        for key in sorted((k for k in r if k.startswith("us_")), key=lambda k: int(k[3:])):
            size = int(key[3:])
            print(f"| {size:,} | {r[key]:,.1f} | {r['gbps_' + key[3:]]:.2f} |")
        return
    for workload in (w.upper() for w in args):
        key, ratios, against_torch = KEY[workload], [], []
        for i in range(rounds):
            # Which side goes first turns round, so that none is credited with the state the
            # machine happens to be in at the start of a round.
            sides = [1, ranks] + (["torch"] if torch else [])
            order = sides[i % len(sides):] + sides[:i % len(sides)]
            got = {n: torch_ddp(workload, ranks) if n == "torch" else bench(binary, workload, n)
                   for n in order}
            one, many = got[1][key], got[ranks][key]
            ratios.append(many / one)
            each = ", ".join(f"{v:,.0f}" for k, v in sorted(got[ranks].items()) if k[:4] == "rank" and k[4:5].isdigit())
            line = (f"{workload} round {i + 1}: 1 × {got[1]['threads_per_rank']} threads {one:,.0f}, "
                    f"{ranks} × {got[ranks]['threads_per_rank']} {many:,.0f} (ranks {each}): {many / one:.2f}×")
            if torch:
                theirs = got["torch"][key]
                against_torch.append(many / theirs)
                line += f"; PyTorch DDP {ranks} × {got['torch']['threads_per_rank']} {theirs:,.0f}: ours {many / theirs:.2f}×"
            print(line)
        print(f"{workload} {key}: {ranks} ranks / 1 rank, median {statistics.median(ratios):.2f}× "
              f"(rounds {min(ratios):.2f}–{max(ratios):.2f})")
        if torch:
            print(f"{workload} {key}: ferrograd {ranks} ranks / PyTorch DDP {ranks} ranks, median "
                  f"{statistics.median(against_torch):.2f}× (rounds {min(against_torch):.2f}–{max(against_torch):.2f})")


if __name__ == "__main__":
    main()
