"""What an operator watches: log context, Prometheus metrics, OpenTelemetry spans, the SIGTERM drain."""
