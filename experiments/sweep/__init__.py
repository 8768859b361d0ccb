"""A sweep's bookkeeping around Hydra's own sweeper and launchers: the grid, job locks, progress, order."""
