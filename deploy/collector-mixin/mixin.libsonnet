// The collector's monitoring mixin (the monitoring-mixins layout): alerts, recording rules and
// dashboards from one configuration (config.libsonnet). generate.jsonnet writes what deploy/
// ships; jsonnet-bundler users import this file and override _config.
(import 'config.libsonnet') +
(import 'alerts.libsonnet') +
(import 'rules.libsonnet') +
(import 'dashboards.libsonnet')
