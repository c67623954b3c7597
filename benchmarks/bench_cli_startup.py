"""How long ``xal --help`` takes, against the interpreter alone and an import of torch.

Quoted by docs/benchmarks.md ("Start-up of the command"); goal (issue 39): under 1 s on a
quiet machine. Each command runs ``--repeat`` times in a fresh interpreter; medians
printed side by side, with ``xal --help`` as a ratio of each baseline.

    python benchmarks/bench_cli_startup.py [--repeat 7]
"""
import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "xal --help": [sys.executable, "-m", "xal_sklearn.cli", "--help"],
    "xal run --help": [sys.executable, "-m", "xal_sklearn.cli", "run", "--help"],
    "xal run --image-size 0": [sys.executable, "-m", "xal_sklearn.cli", "run", "--image-size",
                               "0"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "python -c 'import xal_sklearn.scoring'": [sys.executable, "-c",
                                                "import xal_sklearn.scoring"],
}


def _median_seconds(argv, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    medians = {name: _median_seconds(argv, args.repeat) for name, argv in COMMANDS.items()}
    help_time = medians["xal --help"]
    print(f"median of {args.repeat} runs each\n")
    print("| command | seconds | xal --help / this |")
    print("| --- | --- | --- |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} | {help_time / seconds:.2f} |")


if __name__ == "__main__":
    main()
