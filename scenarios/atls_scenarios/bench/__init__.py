"""``atls-testbed bench``: every performance figure with its baseline, measured in one run.

Each section measures a figure and the baseline it is judged against in the
same process and run, in CPU time or interleaved blocks, so a busy machine
moves both alike. The run prints one table, writes ``bench.json`` (with the
top-level ``ratios`` and ``memory`` objects) and PNG plots under
``reports/bench/<run>/``. Nothing here asserts: tests never time things.
"""
