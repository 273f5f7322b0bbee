// The dashboards, by file name (mixtool and the generator write each to its own file).
{
  grafanaDashboards+:: {
    'host.json': (import 'dashboards/host.libsonnet')($._config),
    'http.json': (import 'dashboards/http.libsonnet')($._config),
    'grpc.json': (import 'dashboards/grpc.libsonnet')($._config),
    'workloads.json': (import 'dashboards/workloads.libsonnet')($._config),
  },
}
