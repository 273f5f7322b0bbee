local g = import '../lib/grafana.libsonnet';

function(config)
  local sel = 'job=~"$job", instance=~"$instance", service_namespace=~"$service_namespace", k8s_pod_name=~"$pod", service_name=~"$rpc_service"';
  g.dashboard(config, 'collector-grpc', 'Collector / gRPC calls', 'gRPC calls served and made on the collector\'s hosts (HTTP/2, from the kernel): rate, error ratio by status code, latency. OpenTelemetry RPC conventions (rpc_server_call_duration_seconds, rpc_client_call_duration_seconds).', 'grpc') {
    templating: { list: [
      g.datasourceVar(config),
      g.jobVar(config),
      g.instanceVar,
      g.queryVar('service_namespace', 'Service namespace', 'label_values({__name__=~"rpc_(server|client)_call_duration_seconds_count", job=~"$job", instance=~"$instance"}, service_namespace)') { allValue: '.*' },
      g.queryVar('pod', 'Pod', 'label_values({__name__=~"rpc_(server|client)_call_duration_seconds_count", job=~"$job", instance=~"$instance", service_namespace=~"$service_namespace"}, k8s_pod_name)') { allValue: '.*' },
      g.queryVar('rpc_service', 'Service', 'label_values({__name__=~"rpc_(server|client)_call_duration_seconds_count", job=~"$job", instance=~"$instance", service_namespace=~"$service_namespace", k8s_pod_name=~"$pod"}, service_name)') { allValue: '.*' },
    ] },
    panels: [
      g.row('Overview (server side)', 1, 0),
      g.panel('stat', 'Calls/s', 'gRPC calls served per second (all methods and status codes).', { x: 0, y: 1, w: 8, h: 4 }, 2, [
        g.target('sum(rate(rpc_server_call_duration_seconds_count{' + sel + '}[$__rate_interval]))', '') + { range: false, instant: true },
      ], {
        fieldConfig: { defaults: { color: null, thresholds: null, unit: 'reqps' } },
        options: { justifyMode: null, orientation: null, graphMode: 'none' },
      }),
      g.panel('stat', 'Server error ratio', 'Share of served calls that ended with a server-side error status (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS).', { x: 8, y: 1, w: 8, h: 4 }, 3, [
        g.target('(sum(rate(rpc_server_call_duration_seconds_count{' + sel + ', rpc_response_status_code=~"UNKNOWN|DEADLINE_EXCEEDED|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS"}[$__rate_interval])) or vector(0)) / sum(rate(rpc_server_call_duration_seconds_count{' + sel + '}[$__rate_interval]))', '') + { range: false, instant: true },
      ], {
        fieldConfig: { defaults: { color: null, thresholds: null, unit: 'percentunit' } },
        options: { justifyMode: null, orientation: null, graphMode: 'none' },
      }),
      g.panel('stat', 'p95 call duration', 'Server-side call duration, 95th percentile over every method (interpolated within the histogram buckets).', { x: 16, y: 1, w: 8, h: 4 }, 4, [
        g.target('histogram_quantile(0.95, sum by (le) (rate(rpc_server_call_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', '') + { range: false, instant: true },
      ], {
        fieldConfig: { defaults: { color: null, thresholds: null, unit: 's' } },
        options: { justifyMode: null, orientation: null, graphMode: 'none' },
      }),
      g.row('Served calls', 5, 5),
      g.panel('timeseries', 'Call rate by service, method and status code', 'gRPC calls served per second; a streaming call counts once, when its stream ends.', { x: 0, y: 6, w: 12, h: 8 }, 6, [
        g.target('sum by (service_name, rpc_method, rpc_response_status_code) (rate(rpc_server_call_duration_seconds_count{' + sel + '}[$__rate_interval]))', '{{service_name}} {{rpc_method}} {{rpc_response_status_code}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 'reqps' } } }),
      g.panel('timeseries', 'Error ratio by service and status code', 'Share of each service\'s served calls per status code other than OK.', { x: 12, y: 6, w: 12, h: 8 }, 7, [
        g.target('sum by (service_name, rpc_response_status_code) (rate(rpc_server_call_duration_seconds_count{' + sel + ', rpc_response_status_code!="OK"}[$__rate_interval])) / ignoring (rpc_response_status_code) group_left sum by (service_name) (rate(rpc_server_call_duration_seconds_count{' + sel + '}[$__rate_interval]))', '{{service_name}} {{rpc_response_status_code}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit' } } }),
      g.panel('timeseries', 'Call duration p50 / p95 by service and method', 'Server-side call duration, from the request\'s first HEADERS byte to the end of the response stream (trailers included): a streaming call lasts its stream.', { x: 0, y: 14, w: 24, h: 8 }, 8, [
        g.target('histogram_quantile(0.5, sum by (service_name, rpc_method, le) (rate(rpc_server_call_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p50 {{service_name}} {{rpc_method}}'),
        g.target('histogram_quantile(0.95, sum by (service_name, rpc_method, le) (rate(rpc_server_call_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p95 {{service_name}} {{rpc_method}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 's' } } }),
      g.row('Client calls', 9, 22),
      g.panel('timeseries', 'Client call rate by caller, destination and status code', 'gRPC calls made per second by processes on this host.', { x: 0, y: 23, w: 12, h: 8 }, 10, [
        g.target('sum by (service_name, server_address, server_port, rpc_response_status_code) (rate(rpc_client_call_duration_seconds_count{' + sel + '}[$__rate_interval]))', '{{service_name}} -> {{server_address}}:{{server_port}} {{rpc_response_status_code}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 'reqps' } } }),
      g.panel('timeseries', 'Client call duration p95 by caller and method', 'Client-side call duration, from the request\'s first HEADERS byte leaving to the end of the response stream arriving.', { x: 12, y: 23, w: 12, h: 8 }, 11, [
        g.target('histogram_quantile(0.95, sum by (service_name, rpc_method, le) (rate(rpc_client_call_duration_seconds_bucket{' + sel + '}[$__rate_interval])))', 'p95 {{service_name}} {{rpc_method}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 's' } } }),
    ],
  }
