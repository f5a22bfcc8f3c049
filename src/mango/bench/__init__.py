"""``mango bench``: speed and memory of MANGO against baselines measured in the same process.

:mod:`~mango.bench.suite` runs every row (:func:`~mango.bench.suite.run`); the rows live in
:mod:`~mango.bench.steps` (training steps) and :mod:`~mango.bench.cuda` (the recipes' CUDA
tables); :mod:`~mango.bench.measure` is how they time and count memory,
:mod:`~mango.bench.reference` the dense ICA the fast paths are timed against, and
:mod:`~mango.bench.report` prints the tables.
"""
