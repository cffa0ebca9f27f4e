"""``python -m attractor.cli``: the same as the ``attractor`` command."""

from attractor.cli import main

main()
