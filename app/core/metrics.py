from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "swapfleet_http_requests_total",
    "HTTP requests by method, route template and status code",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "swapfleet_http_request_duration_seconds",
    "HTTP request latency by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SWAPS = Counter(
    "swapfleet_swaps_total",
    "Swap attempts by outcome and reason code (reason is 'none' when completed)",
    ["outcome", "reason"],
)

# ---- MQTT ingest ----
INGEST_MESSAGES = Counter(
    "swapfleet_ingest_messages_total",
    "MQTT messages received by the ingest, by record kind ('unknown' for foreign topics)",
    ["kind"],
)
INGEST_RECORDS = Counter(
    "swapfleet_ingest_records_total",
    "Valid records written by the ingest, by kind and result (stored, duplicate)",
    ["kind", "result"],
)
INGEST_DEAD_LETTERS = Counter(
    "swapfleet_ingest_dead_letters_total",
    "Messages or records refused by the ingest, by reason",
    ["reason"],
)
INGEST_BATCH_RECORDS = Histogram(
    "swapfleet_ingest_batch_records",
    "Records per committed ingest batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000),
)
INGEST_COMMIT_SECONDS = Histogram(
    "swapfleet_ingest_commit_seconds",
    "Time to write and commit one ingest batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INGEST_LAG_SECONDS = Histogram(
    "swapfleet_ingest_lag_seconds",
    "Commit time minus the record's ts, for the newest record of each batch and kind",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
INGEST_BROKER_CONNECTED = Gauge(
    "swapfleet_ingest_broker_connected",
    "1 while the ingest is connected to the MQTT broker",
)
INGEST_WRITE_RETRIES = Counter(
    "swapfleet_ingest_write_retries_total",
    "Batch writes retried because the database was unreachable",
)
INGEST_WRITER_RESTARTS = Counter(
    "swapfleet_ingest_writer_restarts_total",
    "Writer processes restarted after dying with messages in flight",
)
