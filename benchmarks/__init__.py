"""Benchmarks of longrange, run on demand: ``python -m benchmarks.run [name ...]`` (or ``make bench``).

Speed lives here, never in tests. Results go to ``benchmarks/RESULTS.md`` with the machine, the versions,
the command and the load average next to every table. Comparisons are ratios of two sides measured in
alternation in one process (A B A B ...), several repeats, median reported.
"""
