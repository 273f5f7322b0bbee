local g = import '../lib/grafana.libsonnet';
local text = import '../lib/text.libsonnet';

function(config)
  local latency = config.collectorAlerts.HTTPHighLatency;
  local errors = config.collectorAlerts.HTTPHighErrorRate;
  local sel = 'job=~"$job", instance=~"$instance", service_namespace=~"$service_namespace", k8s_pod_name=~"$pod", service_name=~"$service"';
  g.dashboard(config, 'collector-http', 'Collector / HTTP services', 'HTTP/1.x and HTTP/2 request rate, errors and latency of every service on the host, measured from its sockets by eBPF.', 'http') {
    templating: { list: [
      g.datasourceVar(config),
      g.jobVar(config),
      g.instanceVar,
      g.queryVar('service_namespace', 'Service namespace', 'label_values({__name__=~"http_(server|client)_request_duration_seconds_count", job=~"$job", instance=~"$instance"}, service_namespace)') { allValue: '.*' },
      g.queryVar('pod', 'Pod', 'label_values({__name__=~"http_(server|client)_request_duration_seconds_count", job=~"$job", instance=~"$instance", service_namespace=~"$service_namespace"}, k8s_pod_name)') { allValue: '.*' },
      g.queryVar('service', 'Service', 'label_values({__name__=~"http_(server|client)_request_duration_seconds_count", job=~"$job", instance=~"$instance", service_namespace=~"$service_namespace", k8s_pod_name=~"$pod"}, service_name)') { allValue: '.*' },
    ] },
    panels: [
      g.row('Overview (server side)', 1, 0),
      g.panel('stat', 'Requests/s', 'HTTP requests answered per second by the selected services.', { x: 0, y: 1, w: 4, h: 4 }, 2, [
        g.target('sum(rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', 'Requests/s'),
      ], { fieldConfig: { defaults: { unit: 'reqps' } } }),
      g.panel('stat', '5xx ratio', 'Share of requests answered with a 5xx status.', { x: 4, y: 1, w: 4, h: 4 }, 3, [
        g.target('(sum(rate(http_server_request_duration_seconds_count{' + sel + ', http_response_status_code=~"5.."}[$__rate_interval])) or 0 * sum(rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))) / sum(rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', '5xx ratio'),
      ], {
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            thresholds: {
              steps: [{ color: 'green', value: null }, { color: 'orange', value: errors.ratio / 5 }, { color: 'red', value: errors.ratio }],
            },
          },
        },
      }),
      g.panel('stat', '4xx ratio', 'Share of requests answered with a 4xx status.', { x: 8, y: 1, w: 4, h: 4 }, 4, [
        g.target('(sum(rate(http_server_request_duration_seconds_count{' + sel + ', http_response_status_code=~"4.."}[$__rate_interval])) or 0 * sum(rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))) / sum(rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', '4xx ratio'),
      ], {
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            thresholds: { steps: [{ color: 'green', value: null }, { color: 'orange', value: 0.1 }] },
          },
        },
      }),
      g.panel('stat', 'p95 latency', '95th percentile of the server-side request duration (first request byte in to last response byte out).', { x: 12, y: 1, w: 4, h: 4 }, 5, [
        g.target('histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p95 latency'),
      ], {
        fieldConfig: {
          defaults: {
            unit: 's',
            thresholds: {
              steps: [{ color: 'green', value: null }, { color: 'orange', value: latency.threshold / 2 }, { color: 'red', value: latency.threshold }],
            },
          },
        },
      }),
      g.panel('stat', 'Active requests', 'Requests received and not yet answered.', { x: 16, y: 1, w: 4, h: 4 }, 6, [
        g.target('sum(http_server_active_requests{' + sel + '})', 'Active requests'),
      ], { fieldConfig: { defaults: { unit: 'short' } } }),
      g.panel('stat', 'Client calls/s', 'Outgoing HTTP requests per second made by the selected services.', { x: 20, y: 1, w: 4, h: 4 }, 7, [
        g.target('sum(rate(http_client_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', 'Client calls/s'),
      ], { fieldConfig: { defaults: { unit: 'reqps' } } }),
      g.row('Server requests', 8, 5),
      g.panel('timeseries', 'Request rate by service, port, method and status', '', { x: 0, y: 6, w: 12, h: 8 }, 9, [
        g.target('sum by (service_name, server_port, http_request_method, http_response_status_code) (rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', '{{service_name}}:{{server_port}} {{http_request_method}} {{http_response_status_code}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 'reqps', links: [g.serviceLink('collector-workloads', 'Containers & processes')] } } }),
      g.panel('timeseries', 'Error ratio (5xx and 4xx) by service and port', 'Share of each service\'s requests answered with 5xx and with 4xx statuses.', { x: 12, y: 6, w: 12, h: 8 }, 10, [
        g.target('(sum by (service_name, server_port) (rate(http_server_request_duration_seconds_count{' + sel + ', http_response_status_code=~"5.."}[$__rate_interval])) or 0 * sum by (service_name, server_port) (rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))) / sum by (service_name, server_port) (rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', '5xx {{service_name}}:{{server_port}}'),
        g.target('(sum by (service_name, server_port) (rate(http_server_request_duration_seconds_count{' + sel + ', http_response_status_code=~"4.."}[$__rate_interval])) or 0 * sum by (service_name, server_port) (rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))) / sum by (service_name, server_port) (rate(http_server_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', '4xx {{service_name}}:{{server_port}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit' } } }),
      g.panel('timeseries', 'Latency p50 / p95 / p99 by service, port, method and status', 'Server-side request duration percentiles, interpolated within the histogram buckets. The red line is HTTPHighLatency\'s threshold (p%g over %s for %s).' % [latency.quantile * 100, text.ms(latency.threshold), text.duration(latency['for'])], { x: 0, y: 14, w: 12, h: 8 }, 11, [
        g.target('histogram_quantile(0.5, sum by (service_name, server_port, http_request_method, http_response_status_code, le) (rate(http_server_request_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p50 {{service_name}}:{{server_port}} {{http_request_method}} {{http_response_status_code}}'),
        g.target('histogram_quantile(0.95, sum by (service_name, server_port, http_request_method, http_response_status_code, le) (rate(http_server_request_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p95 {{service_name}}:{{server_port}} {{http_request_method}} {{http_response_status_code}}'),
        g.target('histogram_quantile(0.99, sum by (service_name, server_port, http_request_method, http_response_status_code, le) (rate(http_server_request_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p99 {{service_name}}:{{server_port}} {{http_request_method}} {{http_response_status_code}}'),
      ], {
        fieldConfig: {
          defaults: {
            min: null,
            unit: 's',
            custom: { thresholdsStyle: { mode: 'line' } },
            thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'red', value: latency.threshold }] },
          },
        },
      }),
      g.panel('heatmap', 'Request duration heatmap', 'Requests per second in each duration bucket.', { x: 12, y: 14, w: 12, h: 8 }, 12, [
        g.target('sum by (le) (rate(http_server_request_duration_seconds_bucket{' + sel + '}[$__rate_interval]))', '{{le}}') + { format: 'heatmap' },
      ]),
      g.panel('timeseries', 'Active requests by service and port', '', { x: 0, y: 22, w: 12, h: 8 }, 13, [
        g.target('sum by (service_name, server_port) (http_server_active_requests{' + sel + '})', '{{service_name}}:{{server_port}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 'short' } } }),
      g.panel('timeseries', 'Body bytes by service', 'Request and response body bytes per second (bodies only, no headers).', { x: 12, y: 22, w: 12, h: 8 }, 14, [
        g.target('sum by (service_name, server_port) (rate(http_server_request_body_size_bytes_sum{' + sel + '}[$__rate_interval]))', 'request {{service_name}}:{{server_port}}'),
        g.target('sum by (service_name, server_port) (rate(http_server_response_body_size_bytes_sum{' + sel + '}[$__rate_interval]))', 'response {{service_name}}:{{server_port}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 'Bps' } } }),
      g.row('Client calls (outgoing requests)', 15, 30),
      g.panel('timeseries', 'Client call rate by caller, destination and status', '', { x: 0, y: 31, w: 12, h: 8 }, 16, [
        g.target('sum by (service_name, server_address, server_port, http_response_status_code) (rate(http_client_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', '{{service_name}} → {{server_address}}:{{server_port}} {{http_response_status_code}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 'reqps' } } }),
      g.panel('timeseries', 'Client error ratio (5xx and 4xx) by caller and destination', '', { x: 12, y: 31, w: 12, h: 8 }, 17, [
        g.target('(sum by (service_name, server_address, server_port) (rate(http_client_request_duration_seconds_count{' + sel + ', http_response_status_code=~"5.."}[$__rate_interval])) or 0 * sum by (service_name, server_address, server_port) (rate(http_client_request_duration_seconds_count{' + sel + '}[$__rate_interval]))) / sum by (service_name, server_address, server_port) (rate(http_client_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', '5xx {{service_name}} → {{server_address}}:{{server_port}}'),
        g.target('(sum by (service_name, server_address, server_port) (rate(http_client_request_duration_seconds_count{' + sel + ', http_response_status_code=~"4.."}[$__rate_interval])) or 0 * sum by (service_name, server_address, server_port) (rate(http_client_request_duration_seconds_count{' + sel + '}[$__rate_interval]))) / sum by (service_name, server_address, server_port) (rate(http_client_request_duration_seconds_count{' + sel + '}[$__rate_interval]))', '4xx {{service_name}} → {{server_address}}:{{server_port}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit' } } }),
      g.panel('timeseries', 'Client latency p50 / p95 by caller and destination', 'Client-side duration: from the request\'s first byte leaving to the response\'s last byte arriving.', { x: 0, y: 39, w: 12, h: 8 }, 18, [
        g.target('histogram_quantile(0.5, sum by (service_name, server_address, server_port, le) (rate(http_client_request_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p50 {{service_name}} → {{server_address}}:{{server_port}}'),
        g.target('histogram_quantile(0.95, sum by (service_name, server_address, server_port, le) (rate(http_client_request_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p95 {{service_name}} → {{server_address}}:{{server_port}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 's' } } }),
      g.panel('heatmap', 'Client call duration heatmap', '', { x: 12, y: 39, w: 12, h: 8 }, 19, [
        g.target('sum by (le) (rate(http_client_request_duration_seconds_bucket{' + sel + '}[$__rate_interval]))', '{{le}}') + { format: 'heatmap' },
      ]),
    ],
  }
