"""The data contract between the pipeline and the trainer: the manifest and the record files.

No Apache Beam here: the trainer, the stats job and the evaluation read datasets through this package.
"""
