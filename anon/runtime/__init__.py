"""Running the method: the ``anon`` command, run folders and their names, the manifest, preemption,
folder locks, outputs on disk, summaries, W&B records, and the weights cache."""
