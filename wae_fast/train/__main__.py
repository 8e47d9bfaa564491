"""``python -m wae_fast.train``: see wae_fast/train/cli.py."""
import sys

from .cli import main

sys.exit(main())
