"""ML Lab's shared library: one module per concept, no cloud client imported at import time."""
