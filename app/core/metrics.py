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

# ---- OCPP gateway ----
OCPP_CONNECTED = Gauge(
    "swapfleet_ocpp_connected_stations",
    "Stations connected over OCPP to this process",
)
OCPP_REFUSED = Counter(
    "swapfleet_ocpp_connections_refused_total",
    "OCPP WebSocket handshakes refused, by reason",
    ["reason"],
)
OCPP_MESSAGES = Counter(
    "swapfleet_ocpp_messages_total",
    "OCPP CALLs from stations by action ('unknown' for actions OCPP 2.1 does not name) and "
    "result (ok, callerror)",
    ["action", "result"],
)
OCPP_CALLERRORS = Counter(
    "swapfleet_ocpp_callerrors_total",
    "CALLERRORs the gateway answered, by OCPP error code",
    ["code"],
)
OCPP_EVENTS = Counter(
    "swapfleet_ocpp_events_total",
    "NotifyEvent entries by what they changed: availability (a slot's AvailabilityState), "
    "problem (a slot's Problem raised or cleared), ignored (not about a known slot's state)",
    ["kind"],
)
OCPP_SWAP_SECONDS = Histogram(
    "swapfleet_ocpp_swap_seconds",
    "From receiving BatterySwap BatteryIn to the stored swap after BatteryOut",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
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
