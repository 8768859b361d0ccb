"""Experiments: the run, the sweep's bookkeeping, the report. Imports run one way.

* ``train`` (entry point, ``longrange-train``): one job, as a list of named steps; it uses ``run`` and
  ``sweep.jobs`` (the job's lock).
* ``run/``: what one job needs: config validation (``config``), the memory check (``resources``,
  ``footprint``), Lightning callbacks (``callbacks``, ``measurements``).
* ``sweep/``: a sweep's bookkeeping around Hydra's launchers: the grid (``grid``), one writer per job
  (``jobs``), progress lines (``progress``, ``console``), longest job first (``order``).
* ``report/`` (entry point, ``longrange-report``): tables and figures from the files jobs wrote; it
  imports neither the trainer nor Lightning, nor anything of ``run``.
* ``results`` (result.json and diagnostics.json) and ``figures`` (matplotlib): plain leaves that the
  run writes with and the report reads with.
* ``interpret`` (entry point): a trained checkpoint's attention maps.

Direction, checked by tests/test_analysis.py: ``report -> sweep.grid, results, figures``;
``sweep -> run, results``; ``run -> results, figures``; models and datasets never import experiments.
"""
