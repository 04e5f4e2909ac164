"""``python -m trainer.predict``: see :mod:`trainer.eval.predict`."""

import sys

from trainer.eval.predict import run

if __name__ == "__main__":
    sys.exit(run())
