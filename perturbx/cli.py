"""Command line: ``perturbx demo``."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perturbx", description="Fast perturbation-based explanations.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="explain held-out images of the built-in synthetic data with every method",
                          description="Train (once, cached) the demo CNN on the built-in synthetic shapes, explain "
                                      "held-out images with every black-box method and write a figure.")
    demo.add_argument("--out", default="perturbx-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--n-images", type=int, default=6, help="held-out images to explain (default: %(default)s)")
    demo.add_argument("--cache-dir", default=None, help="where the trained demo CNN is cached "
                                                        "(default: $PERTURBX_CACHE or ~/.cache/perturbx)")
    demo.add_argument("--seed", type=int, default=0, help="random_state of the sampling methods")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``perturbx`` command."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        if args.n_images < 1:
            print("perturbx demo: --n-images must be >= 1", file=sys.stderr)
            return 2
        try:
            from .demo import run_demo
        except ImportError as exc:  # pragma: no cover - depends on the installation
            print(f"perturbx demo: {exc}", file=sys.stderr)
            return 1
        run_demo(args.out, args.n_images, cache_dir=args.cache_dir, random_state=args.seed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
