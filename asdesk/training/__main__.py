"""``python -m asdesk.training {train,evaluate} ...``: the trainer without the rest of the CLI."""

from __future__ import annotations

import argparse
import logging
import sys

from asdesk.training.arguments import add_evaluate_arguments, add_train_arguments


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run training or evaluation."""
    parser = argparse.ArgumentParser(prog="python -m asdesk.training")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train"))
    add_evaluate_arguments(commands.add_parser("evaluate"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "train":
        from asdesk.training.train import main_train

        return main_train(args)
    from asdesk.training.evaluate import main_evaluate

    return main_evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
