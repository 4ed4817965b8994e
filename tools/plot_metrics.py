"""Plots a run's loss, learning-rate, loss-scale and accuracy curves from RUN_DIR/metrics.jsonl into PNG files.

    python tools/plot_metrics.py runs/pretrain            # writes runs/pretrain/plots/loss.png, lr.png, ...
"""
from __future__ import annotations

import argparse
import sys

from smallbert.errors import cli_main
from smallbert.plotting import plot_run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a pretraining or fine-tuning output directory holding metrics.jsonl")
    parser.add_argument("--output_dir", help="where to write the PNGs (default: RUN_DIR/plots)")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for path in plot_run(args.run_dir, args.output_dir):
        print(path)


if __name__ == "__main__":
    sys.exit(main())
