// Recording rules: the HTTP and disk histograms as 5-minute rates, the HTTP ones summed over
// the labels the alerts do not look at (method, scheme, protocol version; status for the
// buckets). Every other label stays: the target's (job, instance, cluster, ...) and the
// identity of the service (service, namespace, pod, port, server address). The alerts read
// these; over long ranges they are also much cheaper to query than the raw series.
{
  local sel = $._config.collectorSelector,
  local perRequest = 'http_request_method, url_scheme, network_protocol_version',
  local rule(record, without, metric) = {
    record: record,
    expr: (if without == '' then 'rate(%s{%s}[5m])' % [metric, sel]
           else 'sum without (%s) (rate(%s{%s}[5m]))' % [without, metric, sel]),
  },

  prometheusRules+:: {
    groups+: [
      {
        name: 'collector-recording',
        rules: [
          rule('service:http_server_requests:rate5m', perRequest, 'http_server_request_duration_seconds_count'),
          rule('service:http_server_request_duration_seconds_bucket:rate5m', perRequest + ', http_response_status_code', 'http_server_request_duration_seconds_bucket'),
          rule('service:http_client_requests:rate5m', perRequest, 'http_client_request_duration_seconds_count'),
          rule('service:http_client_request_duration_seconds_bucket:rate5m', perRequest + ', http_response_status_code', 'http_client_request_duration_seconds_bucket'),
          rule('device:system_disk_io_latency_seconds_count:rate5m', '', 'system_disk_io_latency_seconds_count'),
          rule('device:system_disk_io_latency_seconds_bucket:rate5m', '', 'system_disk_io_latency_seconds_bucket'),
        ],
      },
    ],
  },
}
