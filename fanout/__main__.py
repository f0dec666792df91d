"""`python -m fanout`."""

from fanout.cli import main

main()
