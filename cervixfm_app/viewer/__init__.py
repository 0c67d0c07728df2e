"""The desktop viewer: views and commands what ``core`` computes."""
