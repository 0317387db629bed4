"""The demo: the product told as a story (README's main command)."""
