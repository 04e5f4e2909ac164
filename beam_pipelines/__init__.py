"""ping-llm's data jobs, each run as ``python -m beam_pipelines.<job>``: pretokenize, stats, ingest_atlas, make_sample."""

import logging


class _DropApitoolsNotice(logging.Filter):
    # apache-beam warns at import time that an optional Google client library is missing; it is only
    # needed for BigQuery and says nothing useful to users of these jobs.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_DropApitoolsNotice())
