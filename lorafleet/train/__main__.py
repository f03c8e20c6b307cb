"""``python -m lorafleet.train``: the same as ``lorafleet train`` (how it runs in a container of the serving image)."""

import sys

from lorafleet.train.cli import main

sys.exit(main())
