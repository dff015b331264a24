"""``geomatch batch``: many optical/SAR pairs as one resumable job.

``manifest`` reads the list of pairs and resolves each pair's pipeline on the client; ``runner`` decides which
pairs are already done, runs the others (in this process, or one task per pair on a dask.distributed
cluster) and writes the summary table of every pair's outcome.
"""
