"""``geomatch batch``: many optical/SAR pairs as one resumable job.

``manifest`` reads the list of pairs and resolves each pair's pipeline on the client; ``runner`` decides which
pairs are already done and runs the others (in this process, or one task per pair on a dask.distributed
cluster); ``summary`` writes the table of every pair's outcome.
"""
