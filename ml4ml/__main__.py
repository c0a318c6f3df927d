"""``python -m ml4ml``: the ``ml4ml`` command."""

from ml4ml.cli import main

main()
