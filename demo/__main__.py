"""``python -m demo``."""

from demo.story import main

main()
