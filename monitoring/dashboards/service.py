"""Service overview: traffic, errors, latency per model and version, batching, the gateway,
saturation and GPUs."""

from monitoring.alerts.rules import SERVER_FAULTS
from monitoring.dashboards.model import Dashboard, Panel, Query, Row
from monitoring.dashboards.promql import MODELS, quantile, rate, share

_VERSION = "model_name, model_version"
_LEGEND = "{{model_name}} v{{model_version}}"
_FAULTS = f'{MODELS}, status=~"{"|".join(SERVER_FAULTS)}"'

TRAFFIC = Row(
    "Traffic and errors",
    (
        Panel(
            "ModelInfer calls per second",
            (
                Query(
                    rate("inferwatch_server_requests_total", f"{_VERSION}, status"),
                    f"{_LEGEND} {{{{status}}}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Server error ratio",
            (
                Query(
                    f"{rate('inferwatch_server_requests_total', _VERSION, _FAULTS)} / "
                    f"{rate('inferwatch_server_requests_total', _VERSION)}",
                    _LEGEND,
                ),
            ),
            unit="percentunit",
            description="Calls answered " + ", ".join(SERVER_FAULTS) + ".",
        ),
        Panel(
            "Latency p50 / p95 / p99",
            tuple(
                Query(
                    quantile(q, "inferwatch_server_request_duration_seconds", _VERSION),
                    f"p{round(q * 100)} {_LEGEND}",
                )
                for q in (0.5, 0.95, 0.99)
            ),
            unit="s",
            exemplars=True,
            description="Receipt to answer of ModelInfer; exemplar dots open the trace in Tempo.",
        ),
        Panel(
            "Calls in flight",
            (Query(f"sum by (model_name) (inferwatch_server_requests_in_flight{{{MODELS}}})"),),
        ),
    ),
)

BATCHING = Row(
    "Queue and batching",
    (
        Panel(
            "Queue wait p95",
            (Query(quantile(0.95, "inferwatch_batch_queue_duration_seconds", _VERSION), _LEGEND),),
            unit="s",
        ),
        Panel(
            "Queue depth",
            (Query(f"sum by ({_VERSION}) (inferwatch_batch_queue_depth{{{MODELS}}})", _LEGEND),),
        ),
        Panel(
            "Rejections per second",
            (
                Query(
                    rate("inferwatch_server_requests_rejected_total", f"{_VERSION}, reason"),
                    f"{_LEGEND} {{{{reason}}}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Rows per forward pass",
            (
                Query(
                    f"{rate('inferwatch_batch_size_sum', _VERSION)} / "
                    f"{rate('inferwatch_batch_size_count', _VERSION)}",
                    _LEGEND,
                ),
            ),
        ),
        Panel(
            "Forward pass p95",
            (
                Query(
                    quantile(0.95, "inferwatch_batch_forward_duration_seconds", _VERSION), _LEGEND
                ),
            ),
            unit="s",
        ),
        Panel(
            "Model versions ready",
            (Query(f"inferwatch_model_ready{{{MODELS}}}", _LEGEND),),
            kind="stat",
            description="1: serving; 0: failed to load or unloaded.",
        ),
    ),
)

_ANY = 'http_route=~".*"'
GATEWAY = Row(
    "Gateway",
    (
        Panel(
            "HTTP requests per second",
            (
                Query(
                    rate(
                        "http_server_request_duration_seconds_count",
                        "http_route, http_response_status_code",
                        _ANY,
                    ),
                    "{{http_route}} {{http_response_status_code}}",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "HTTP latency p95",
            (
                Query(
                    quantile(0.95, "http_server_request_duration_seconds", "http_route", _ANY),
                    "{{http_route}}",
                ),
            ),
            unit="s",
            exemplars=True,
        ),
        Panel(
            "Upstream gRPC p95 per model server",
            (
                Query(
                    quantile(
                        0.95,
                        "inferwatch_gateway_upstream_duration_seconds",
                        "backend, rpc_method",
                        'backend=~".*"',
                    ),
                    "{{backend}} {{rpc_method}}",
                ),
            ),
            unit="s",
        ),
        Panel(
            "Share of calls per version",
            (Query(share("inferwatch_gateway_routed_total", _VERSION, "model_name"), _LEGEND),),
            unit="percentunit",
            description="The traffic split as routed (each attempt), e.g. the canary's share.",
        ),
    ),
)

SATURATION = Row(
    "Saturation",
    (
        Panel(
            "CPU (cores)",
            (
                Query(
                    rate("process_cpu_time_seconds_total", "job, instance", 'job=~".+"'),
                    "{{job}} {{instance}}",
                ),
            ),
        ),
        Panel(
            "Resident memory",
            (Query("sum by (job, instance) (process_memory_usage_bytes)", "{{job}} {{instance}}"),),
            unit="bytes",
        ),
        Panel(
            "GPU utilisation",
            (Query("hw_gpu_utilization_ratio", "{{instance}} GPU {{hw_id}}"),),
            unit="percentunit",
            description="Only where NVML finds a GPU.",
        ),
        Panel(
            "GPU memory used",
            (
                Query(
                    "hw_gpu_memory_usage_bytes / hw_gpu_memory_limit_bytes",
                    "{{instance}} GPU {{hw_id}}",
                ),
            ),
            unit="percentunit",
            description="Only where NVML finds a GPU.",
        ),
    ),
)

DASHBOARD = Dashboard(
    uid="inferwatch-service",
    title="InferWatch / Service overview",
    description="Requests, errors and latency per model and version; queue, batching, gateway.",
    rows=(TRAFFIC, BATCHING, GATEWAY, SATURATION),
)
