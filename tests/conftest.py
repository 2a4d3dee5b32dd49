"""Test-wide configuration.

Hypothesis: no per-example deadline (the CI machine is shared and slow at times); under CI
the examples are derandomized so a landing never depends on a lucky draw, while local runs
keep exploring new examples.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
