"""``jaxlm`` command line.  Uses only the public API.

jaxlm demo [--n 100000] [--scipy 300] [--png jaxlm-demo.png] [--float64]
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jaxlm", description="Batched Levenberg–Marquardt in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit many noisy 1-D Gaussians in one call, compare with scipy")
    demo.add_argument("--n", type=int, default=100_000, help="number of curves (default 100000)")
    demo.add_argument("--scipy", type=int, default=300, help="fits to repeat with scipy (default 300)")
    demo.add_argument("--png", default="jaxlm-demo.png", help="figure path ('' for none)")
    demo.add_argument("--float64", action="store_true", help="run in float64 (enables jax_enable_x64)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        if args.n < 1 or args.scipy < 1:
            parser.error("--n and --scipy must be positive")
        if args.float64:
            import jax

            jax.config.update("jax_enable_x64", True)  # the user's explicit choice
        from jaxlm import _demo

        _demo.run(n=args.n, n_scipy=min(args.scipy, args.n), png=args.png or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
