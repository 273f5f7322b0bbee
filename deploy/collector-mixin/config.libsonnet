// The mixin's configuration. Override any of it where the mixin is imported, e.g.
//   (import 'mixin.libsonnet') + { _config+:: {
//     collectorSelector: 'job="ebpf-collector"',
//     collectorAlerts+: { HTTPHighLatency+: { threshold: 1, 'for': '15m' } },
//   } }
{
  _config+:: {
    // Which scrape jobs are collectors: every rule and the dashboards' Job variable use it.
    collectorSelector: 'job="collector"',
    // The labels that name a group of collectors: the job, and e.g. `cluster, job` where one
    // Prometheus scrapes several clusters. A collector is these and `instance`. (The HTTP, disk
    // and host alerts keep every label of their series; these are for the rules that must
    // aggregate to a collector or a job.)
    collectorJobLabels: 'job',

    // Where each alert's runbook_url points: %s is the alert's name in lower case, the anchor
    // of its section in docs/runbooks.md. Point it at your copy of that file (your Git host's
    // URL of it, or a wiki page with the same anchors).
    collectorRunbookURLPattern: 'docs/runbooks.md#%s',

    // Dashboards (the keys other mixins use for the same settings): the Prometheus data source
    // selected by default (the $datasource variable
    // lists every Prometheus data source matching datasourceFilterRegex), refresh, time range,
    // time zone and the tag that links the dashboards to each other.
    datasourceName: 'Prometheus',
    datasourceUid: 'prometheus',
    datasourceFilterRegex: '',
    dashboardTag: 'collector',
    dashboardRefresh: '30s',
    dashboardPeriod: 'now-1h',
    dashboardTimezone: 'browser',

    // Per alert: `for`, severity and thresholds (ratios are fractions: 0.05 is 5%; minRate
    // is the traffic below which the alert stays quiet, per second). Alerts with a warning
    // and a critical threshold make one rule per severity; set one to null to leave it out.
    collectorAlerts: {
      CollectorDown: { 'for': '10m', severity: 'warning' },
      CollectorJobDown: { 'for': '5m', severity: 'critical' },
      CollectorCollectorFailing: { 'for': '5m', severity: 'warning' },
      CollectorSkipped: { 'for': '5m', severity: 'warning' },
      CollectorProgramDetached: { 'for': '5m', severity: 'warning' },
      CollectorHTTPEventsLost: { 'for': '15m', severity: 'warning', ratio: 0.01, minRate: 0.1 },
      CollectorHTTP2StreamsLost: { 'for': '15m', severity: 'warning', ratio: 0.01, minRate: 0.1 },
      CollectorDiskEventsLost: { 'for': '15m', severity: 'warning', ratio: 0.01 },
      CollectorEventsDropped: { 'for': null, severity: 'warning' },
      HTTPHighErrorRate: { 'for': '5m', severity: 'warning', ratio: 0.05, minRate: 0.1 },
      HTTPHighLatency: { 'for': '10m', severity: 'warning', quantile: 0.95, threshold: 0.5, minRate: 0.1 },
      HTTPClientHighErrorRate: { 'for': '5m', severity: 'warning', ratio: 0.05, minRate: 0.1 },
      HTTPClientHighLatency: { 'for': '10m', severity: 'warning', quantile: 0.95, threshold: 1, minRate: 0.1 },
      GRPCHighErrorRate: { 'for': '5m', severity: 'warning', ratio: 0.05, minRate: 0.1 },
      // 0.131072 s is a bucket bound of the disk histogram (powers of two from 1 µs).
      DiskHighLatency: { 'for': '10m', severity: 'warning', quantile: 0.95, threshold: 0.131072, minRate: 1 },
      // node-mixin's thresholds and durations.
      HostFilesystemAlmostOutOfSpace: { 'for': '30m', warning: 0.05, critical: 0.03 },
      HostFilesystemSpaceFillingUp: { 'for': '1h', warning: { ratio: 0.15, hours: 24 }, critical: { ratio: 0.10, hours: 4 } },
      HostFilesystemFilesFillingUp: { 'for': '1h', warning: { ratio: 0.4, hours: 24 }, critical: { ratio: 0.2, hours: 4 } },
      HostFilesystemAlmostOutOfFiles: { 'for': '1h', warning: 0.05, critical: 0.03 },
      HostFileDescriptorLimit: { 'for': '15m', warning: 0.7, critical: 0.9 },
      // node-mixin fires at once; 5 minutes rides out a burst of short connections.
      HostConntrackLimit: { 'for': '5m', severity: 'warning', ratio: 0.75 },
      HostClockNotSynchronising: { 'for': '10m', severity: 'warning' },
      HostClockSkewDetected: { 'for': '10m', severity: 'warning', offset: 0.05 },
      HostMemoryHighUtilization: { 'for': '15m', severity: 'warning', ratio: 0.9 },
      HostCPUHighUsage: { 'for': '15m', severity: 'info', ratio: 0.9 },
      HostSystemSaturation: { 'for': '15m', severity: 'warning', perCpu: 2 },
      HostDiskIOSaturation: { 'for': '30m', severity: 'warning', queue: 10 },
      HostNetworkErrors: { 'for': '1h', severity: 'warning', ratio: 0.01 },
    },
  },
}
