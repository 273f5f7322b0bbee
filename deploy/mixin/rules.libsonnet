// Recording rules: the HTTP and disk histograms aggregated over 5 minutes to the labels the
// alerts and the dashboards' overviews group by (per service endpoint, per client target, per
// disk and operation). The alerts read these; over long ranges they are also much cheaper to
// query than the raw series, which carry method, status and protocol per bucket.
{
  local sel = $._config.collectorSelector,
  local server = 'job, instance, service_namespace, service_name, k8s_namespace_name, k8s_pod_name, server_port',
  local client = 'job, instance, service_namespace, service_name, k8s_namespace_name, k8s_pod_name, server_address, server_port',
  local disk = 'job, instance, device, operation',
  local rule(record, by, metric) = {
    record: record,
    expr: 'sum by (%s) (rate(%s{%s}[5m]))' % [by, metric, sel],
  },

  prometheusRules+:: {
    groups+: [
      {
        name: 'collector-recording',
        rules: [
          rule('service:http_server_requests:rate5m', server + ', http_response_status_code', 'http_server_request_duration_seconds_count'),
          rule('service:http_server_request_duration_seconds_bucket:rate5m', server + ', le', 'http_server_request_duration_seconds_bucket'),
          rule('service:http_client_requests:rate5m', client + ', http_response_status_code', 'http_client_request_duration_seconds_count'),
          rule('service:http_client_request_duration_seconds_bucket:rate5m', client + ', le', 'http_client_request_duration_seconds_bucket'),
          rule('device:system_disk_io_latency_seconds_count:rate5m', disk, 'system_disk_io_latency_seconds_count'),
          rule('device:system_disk_io_latency_seconds_bucket:rate5m', disk + ', le', 'system_disk_io_latency_seconds_bucket'),
        ],
      },
    ],
  },
}
