"""Imported first by every evals module that needs numpy and scipy (the ``evals`` extra).

In a bare ``pip install ragtrail`` the import then fails with one line naming the command to run,
instead of a ``ModuleNotFoundError`` from deep inside the statistics code.
"""

from ragtrail._deps import require

require("numpy", extra="evals", feature="comparisons, gates, reports and sweeps")
require("scipy", extra="evals", feature="comparisons, gates, reports and sweeps")
