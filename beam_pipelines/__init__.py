"""ping-llm's data jobs, each run as ``python -m beam_pipelines.<job>``: pretokenize, stats, ingest_atlas, make_sample."""

import logging


class _DropApitoolsNotice(logging.Filter):
    # apache-beam warns at import time that an optional Google client library is missing; it is only
    # needed for BigQuery and says nothing useful to users of these jobs. This drops it in the launching
    # process; the local runner's worker processes print it too, on a stderr that goes to the job's log
    # (beam_pipelines.common.joblog).
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


logging.getLogger().addFilter(_DropApitoolsNotice())
