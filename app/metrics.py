from prometheus_client import Counter, Histogram

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
