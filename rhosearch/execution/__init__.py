"""Where work runs: Ray resources, the job store, and the Tune searcher and trainables."""
