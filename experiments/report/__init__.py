"""The sweep report (``longrange-report SWEEP`` or ``python -m longrange.experiments.report SWEEP``): see
``build``. Plain Python, numpy and matplotlib over the files jobs wrote: no trainer, no Lightning."""
