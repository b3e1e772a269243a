"""Capture: timed steps, profiler sessions, scope hooks, saved-tensor accounting, facts.json."""

import os

# Kineto prints a line per profiler start/stop and c10 warns about blocks allocated before
# profiling: neither helps a user. Read when the profiler first starts; a user's setting wins.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
