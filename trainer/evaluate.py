"""``python -m trainer.evaluate``: see :mod:`trainer.eval.evaluate`."""

import sys

from trainer.eval.evaluate import run

if __name__ == "__main__":
    sys.exit(run())
