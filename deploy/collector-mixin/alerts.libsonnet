// Alerting rules. Thresholds, `for:` durations and severities come from _config.collectorAlerts
// (config.libsonnet); each alert links its section of docs/runbooks.md.
local text = import 'lib/text.libsonnet';

{
  local cfg = $._config,
  local a = cfg.collectorAlerts,
  local sel = cfg.collectorSelector,
  local jobs = cfg.collectorJobLabels,
  local instances = jobs + ', instance',

  // One rule; `for` and severity from the alert's configuration unless given.
  local alert(name, expr, summary, description, severity=a[name].severity, for_=std.get(a[name], 'for')) = {
    alert: name,
    expr: expr,
    labels: { severity: severity },
    annotations: {
      summary: summary,
      description: description,
      runbook_url: cfg.collectorRunbookURLPattern % std.asciiLower(name),
    },
  } + (if for_ == null then {} else { 'for': for_ }),

  // The same alert once per configured severity (warning, critical), each with its own
  // threshold; a severity set to null is left out.
  local perSeverity(name, make) = [
    make(sev, a[name][sev]) + { labels+: { severity: sev } }
    for sev in ['warning', 'critical']
    if std.get(a[name], sev) != null
  ],

  // HTTP and gRPC exchanges recorded (both sides, HTTP/1, HTTP/2 and gRPC): what losses are
  // compared with.
  local exchanges(extra='') =
    'sum by (%s) (rate({__name__=~"http_(server|client)_request_duration_seconds_count|rpc_(server|client)_call_duration_seconds_count", %s%s}[15m]))' % [instances, sel, extra],

  // Requests per second by status, per endpoint (a recorded series), without the status.
  local requests(record, status='') =
    'sum without (http_response_status_code) (%s%s)' % [record, if status == '' then '' else '{http_response_status_code=~"%s"}' % status],
  local podSuffix = '{{ with $labels.k8s_pod_name }} (pod {{ $labels.k8s_namespace_name }}/{{ . }}){{ end }}',

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'collector',
        rules: [
          // One host's collector down: a warning (kube-prometheus's TargetDown waits 10
          // minutes), which a restart or a node drain rides out; every host's at once is
          // critical (CollectorJobDown).
          alert(
            'CollectorDown',
            'up{%s} == 0' % sel,
            'Collector {{ $labels.instance }} is down',
            'Prometheus could not scrape the collector at {{ $labels.instance }} for %s: no host, disk, network or HTTP metrics from that host.' % text.duration(a.CollectorDown['for']),
          ),
          alert(
            'CollectorJobDown',
            'count by (%s) (up{%s} == 0) == count by (%s) (up{%s})' % [jobs, sel, jobs, sel],
            'Every collector of job {{ $labels.job }} is down',
            "Prometheus could scrape none of the {{ $value }} collectors of job {{ $labels.job }} for %s: no host or HTTP metrics at all (the collector's deployment, or Prometheus's way to it, is broken)." % text.duration(a.CollectorJobDown['for']),
          ),
          alert(
            'CollectorCollectorFailing',
            'collector_scrape_collector_success{%s} == 0' % sel,
            'Collector {{ $labels.collector }} failing on {{ $labels.instance }}',
            "The {{ $labels.collector }} collector has failed on every scrape for %s; the collector's log says why." % text.duration(a.CollectorCollectorFailing['for']),
          ),
          // A collector that could not start (no tracefs, no cgroup v2, a privilege or a
          // kernel feature missing): what it exports is absent, and alerts on it never fire.
          alert(
            'CollectorSkipped',
            'collector_collector_skipped_info{%s} == 1' % sel,
            'Collector {{ $labels.collector }} skipped on {{ $labels.instance }}',
            'The {{ $labels.collector }} collector did not start: {{ $labels.reason }}. Its metrics, and the alerts and panels built on them, are missing for this host.',
          ),
          alert(
            'CollectorProgramDetached',
            'collector_bpf_program_attached{%s} == 0' % sel,
            'eBPF program {{ $labels.program }} not attached on {{ $labels.instance }}',
            '{{ $labels.program }} ({{ $labels.hook }}) is not attached: what it measures is missing or incomplete (see collector_bpf_program_attached in docs/metrics.md).',
          ),
          // HTTP exchanges the kernel could not follow, per reason, as a share of the
          // exchanges and calls recorded, at a minimum traffic (docs/metrics.md, "What can
          // still be lost").
          alert(
            'CollectorHTTPEventsLost',
            |||
              sum by (%(instances)s, reason) (rate(collector_bpf_events_dropped_total{%(sel)s, reason=~"http2?_.*|tls_.*"}[15m]))
                / on (%(instances)s) group_left
              %(exchanges)s
              > %(ratio).10g
              and on (%(instances)s)
              %(exchanges)s > %(minRate).10g
            ||| % { instances: instances, sel: sel, exchanges: exchanges(), ratio: a.CollectorHTTPEventsLost.ratio, minRate: a.CollectorHTTPEventsLost.minRate },
            '{{ $labels.instance }}: HTTP events lost ({{ $labels.reason }}), {{ $value | humanizePercentage }} of the exchanges recorded',
            'The kernel programs on {{ $labels.instance }} could not follow HTTP traffic ({{ $labels.reason }}) at {{ $value | humanizePercentage }} of the rate of exchanges recorded, for %s: the HTTP metrics undercount. docs/metrics.md lists each reason and what to do.' % text.duration(a.CollectorHTTPEventsLost['for']),
          ),
          // The daemon's HTTP/2 decoding giving up (per reason) on a share of the HTTP/2
          // streams and gRPC calls recorded.
          alert(
            'CollectorHTTP2StreamsLost',
            |||
              sum by (%(instances)s, reason) (rate(collector_http2_dropped_total{%(sel)s}[15m]))
                / on (%(instances)s) group_left
              %(exchanges)s
              > %(ratio).10g
              and on (%(instances)s)
              %(exchanges)s > %(minRate).10g
            ||| % { instances: instances, sel: sel, exchanges: exchanges(', network_protocol_version=~"2|"'), ratio: a.CollectorHTTP2StreamsLost.ratio, minRate: a.CollectorHTTP2StreamsLost.minRate },
            '{{ $labels.instance }}: HTTP/2 streams lost ({{ $labels.reason }}), {{ $value | humanizePercentage }} of those recorded',
            'The collector on {{ $labels.instance }} gave up HTTP/2 streams or header decoding ({{ $labels.reason }}) at {{ $value | humanizePercentage }} of the rate of HTTP/2 streams and gRPC calls recorded, for %s (docs/metrics.md, HTTP/2).' % text.duration(a.CollectorHTTP2StreamsLost['for']),
          ),
          // Disk completions that matched no issue, as a share of the requests measured.
          alert(
            'CollectorDiskEventsLost',
            |||
              sum by (%(instances)s) (rate(collector_bpf_events_dropped_total{%(sel)s, reason="disk_completion_unmatched"}[15m]))
                /
              sum by (%(instances)s) (rate(system_disk_io_latency_seconds_count{%(sel)s}[15m]))
              > %(ratio).10g
            ||| % { instances: instances, sel: sel, ratio: a.CollectorDiskEventsLost.ratio },
            '{{ $labels.instance }}: {{ $value | humanizePercentage }} of disk completions unmatched',
            'Disk requests completed on {{ $labels.instance }} that the kernel programs never saw issued, at {{ $value | humanizePercentage }} of the requests measured, for %s: the disk latency histograms undercount (docs/metrics.md, Disk).' % text.duration(a.CollectorDiskEventsLost['for']),
          ),
          // Events not recorded because a kernel map was full: any at all.
          alert(
            'CollectorEventsDropped',
            'increase(collector_bpf_events_dropped_total{%s, reason=~".*_map_full"}[15m]) > 0' % sel,
            'Kernel maps full on {{ $labels.instance }} ({{ $labels.reason }})',
            '{{ $value | humanize }} events were not recorded in 15 minutes because a kernel map was full (too many cgroups, devices or HTTP label sets).',
          ),
        ],
      },
      {
        name: 'collector-http',
        rules: [
          // 5xx answers over a share of a service's requests, while it serves a minimum rate
          // (so that a single failure on an idle service does not page). Per service and, in
          // Kubernetes, per pod (identity labels; absent ones group as empty).
          alert(
            'HTTPHighErrorRate',
            |||
              %(errors)s / %(all)s > %(ratio).10g
              and
              %(all)s > %(minRate).10g
            ||| % { errors: requests('service:http_server_requests:rate5m', '5..'), all: requests('service:http_server_requests:rate5m'), ratio: a.HTTPHighErrorRate.ratio, minRate: a.HTTPHighErrorRate.minRate },
            '{{ $labels.service_name }}:{{ $labels.server_port }}%s on {{ $labels.instance }} answers 5xx to {{ $value | humanizePercentage }} of requests' % podSuffix,
            'More than %s of the HTTP requests to {{ $labels.service_name }} (port {{ $labels.server_port }}) got a 5xx status over the last 5 minutes.' % text.percent(a.HTTPHighErrorRate.ratio),
          ),
          // A percentile of the server-side request duration over the threshold, with the
          // same minimum traffic.
          alert(
            'HTTPHighLatency',
            |||
              histogram_quantile(%(q).10g, service:http_server_request_duration_seconds_bucket:rate5m) > %(threshold).10g
              and
              %(all)s > %(minRate).10g
            ||| % { q: a.HTTPHighLatency.quantile, all: requests('service:http_server_requests:rate5m'), threshold: a.HTTPHighLatency.threshold, minRate: a.HTTPHighLatency.minRate },
            '{{ $labels.service_name }}:{{ $labels.server_port }}%s on {{ $labels.instance }}: p%g latency {{ $value | humanizeDuration }}' % [podSuffix, a.HTTPHighLatency.quantile * 100],
            'The %gth percentile of HTTP request duration of {{ $labels.service_name }} (port {{ $labels.server_port }}) has been over %s for %s. The duration runs to the last byte of the response leaving: large responses to slow clients take long without the service being slow (see the response size panels).' % [a.HTTPHighLatency.quantile * 100, text.ms(a.HTTPHighLatency.threshold), text.duration(a.HTTPHighLatency['for'])],
          ),
        ],
      },
      {
        name: 'collector-grpc',
        rules: [
          // Calls ending with a server-side error status (OpenTelemetry's list for RPC
          // servers: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
          // DATA_LOSS) over a share of a service's calls, at a minimum rate. Client-caused
          // codes (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED, ...) are left out, as 4xx
          // are for HTTP.
          alert(
            'GRPCHighErrorRate',
            |||
              (
                  sum without (rpc_response_status_code) (rate(rpc_server_call_duration_seconds_count{%(sel)s, rpc_response_status_code=~"UNKNOWN|DEADLINE_EXCEEDED|UNIMPLEMENTED|INTERNAL|UNAVAILABLE|DATA_LOSS"}[5m]))
                /
                  sum without (rpc_response_status_code) (rate(rpc_server_call_duration_seconds_count{%(sel)s}[5m]))
              ) > %(ratio).10g
              and
              sum without (rpc_response_status_code) (rate(rpc_server_call_duration_seconds_count{%(sel)s}[5m])) > %(minRate).10g
            ||| % { sel: sel, ratio: a.GRPCHighErrorRate.ratio, minRate: a.GRPCHighErrorRate.minRate },
            '{{ $labels.service_name }} {{ $labels.rpc_method }}%s on {{ $labels.instance }} fails {{ $value | humanizePercentage }} of gRPC calls' % podSuffix,
            'More than %s of the gRPC calls to {{ $labels.service_name }} ({{ $labels.rpc_method }}) ended with a server error status (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS) over the last 5 minutes.' % text.percent(a.GRPCHighErrorRate.ratio),
          ),
        ],
      },
      // The client side: what a service asks of one server (address and port), at a minimum
      // rate: a dependency failing or slow, seen from its callers.
      {
        name: 'collector-http-client',
        rules: [
          alert(
            'HTTPClientHighErrorRate',
            |||
              %(errors)s / %(all)s > %(ratio).10g
              and
              %(all)s > %(minRate).10g
            ||| % { errors: requests('service:http_client_requests:rate5m', '5..'), all: requests('service:http_client_requests:rate5m'), ratio: a.HTTPClientHighErrorRate.ratio, minRate: a.HTTPClientHighErrorRate.minRate },
            '{{ $labels.service_name }} on {{ $labels.instance }} gets 5xx from {{ $labels.server_address }}:{{ $labels.server_port }} for {{ $value | humanizePercentage }} of its requests',
            'More than %s of the HTTP requests {{ $labels.service_name }} made to {{ $labels.server_address }}:{{ $labels.server_port }} got a 5xx status over the last 5 minutes.' % text.percent(a.HTTPClientHighErrorRate.ratio),
          ),
          alert(
            'HTTPClientHighLatency',
            |||
              histogram_quantile(%(q).10g, service:http_client_request_duration_seconds_bucket:rate5m) > %(threshold).10g
              and
              %(all)s > %(minRate).10g
            ||| % { q: a.HTTPClientHighLatency.quantile, all: requests('service:http_client_requests:rate5m'), threshold: a.HTTPClientHighLatency.threshold, minRate: a.HTTPClientHighLatency.minRate },
            '{{ $labels.service_name }} on {{ $labels.instance }}: p%g latency {{ $value | humanizeDuration }} to {{ $labels.server_address }}:{{ $labels.server_port }}' % (a.HTTPClientHighLatency.quantile * 100),
            'The %gth percentile of the duration of the HTTP requests {{ $labels.service_name }} made to {{ $labels.server_address }}:{{ $labels.server_port }} has been over %s for %s, from the request leaving to the last byte of the response arriving.' % [a.HTTPClientHighLatency.quantile * 100, text.ms(a.HTTPClientHighLatency.threshold), text.duration(a.HTTPClientHighLatency['for'])],
          ),
        ],
      },
      {
        name: 'collector-disk',
        rules: [
          // A percentile of the device service time of reads or writes over the threshold
          // while the device does a minimum rate (eBPF histogram: issue to completion). The
          // default, 0.131072 s, is a bucket bound (powers of two from 1 µs): a threshold
          // inside a bucket compares against an interpolated guess.
          alert(
            'DiskHighLatency',
            |||
              histogram_quantile(%(q).10g, device:system_disk_io_latency_seconds_bucket:rate5m{operation=~"read|write"}) > %(threshold).10g
              and
              device:system_disk_io_latency_seconds_count:rate5m{operation=~"read|write"} > %(minRate).10g
            ||| % { q: a.DiskHighLatency.quantile, threshold: a.DiskHighLatency.threshold, minRate: a.DiskHighLatency.minRate },
            'Disk {{ $labels.device }} on {{ $labels.instance }}: p%g {{ $labels.operation }} latency {{ $value | humanizeDuration }}' % (a.DiskHighLatency.quantile * 100),
            'The %gth percentile of {{ $labels.operation }} service time on {{ $labels.device }} has been over %s for %s.' % [a.DiskHighLatency.quantile * 100, text.ms(a.DiskHighLatency.threshold), text.duration(a.DiskHighLatency['for'])],
          ),
        ],
      },
      // The host alerts of node_exporter's node-mixin that the collector's metrics allow, with
      // its thresholds and durations, on the collector's `system_*` names.
      {
        name: 'collector-host',
        rules:
          // Less of a writable filesystem's space available to users than the threshold.
          perSeverity('HostFilesystemAlmostOutOfSpace', function(sev, ratio) alert(
            'HostFilesystemAlmostOutOfSpace',
            |||
              (system_filesystem_avail_bytes{%(sel)s} / system_filesystem_size_bytes{%(sel)s} < %(ratio).10g
              and system_filesystem_readonly{%(sel)s} == 0)
            ||| % { sel: sel, ratio: ratio },
            '{{ $labels.mountpoint }} on {{ $labels.instance }} has {{ $value | humanizePercentage }} space left',
            'Filesystem {{ $labels.device }} ({{ $labels.fstype }}) at {{ $labels.mountpoint }} has had less than %s of its space available for %s.' % [text.percent(ratio), text.duration(a.HostFilesystemAlmostOutOfSpace['for'])],
            severity=sev,
          ))
          // Little left and, at the last 6 hours' rate, full within the given time.
          + perSeverity('HostFilesystemSpaceFillingUp', function(sev, t) alert(
            'HostFilesystemSpaceFillingUp',
            |||
              (system_filesystem_avail_bytes{%(sel)s} / system_filesystem_size_bytes{%(sel)s} < %(ratio).10g
              and predict_linear(system_filesystem_avail_bytes{%(sel)s}[6h], %(hours)d * 3600) < 0
              and system_filesystem_readonly{%(sel)s} == 0)
            ||| % { sel: sel, ratio: t.ratio, hours: t.hours },
            '{{ $labels.mountpoint }} on {{ $labels.instance }} is filling up%s' % (if sev == 'critical' then ' fast' else ''),
            'Filesystem {{ $labels.device }} at {{ $labels.mountpoint }} has {{ $value | humanizePercentage }} space left and, at the rate of the last 6 hours, will be full within %s.' % text.duration('%dh' % t.hours),
            severity=sev,
          ))
          // Few inodes left and, at the last 6 hours' rate, none within the given time.
          + perSeverity('HostFilesystemFilesFillingUp', function(sev, t) alert(
            'HostFilesystemFilesFillingUp',
            |||
              (system_filesystem_files_free{%(sel)s} / system_filesystem_files{%(sel)s} < %(ratio).10g
              and predict_linear(system_filesystem_files_free{%(sel)s}[6h], %(hours)d * 3600) < 0
              and system_filesystem_readonly{%(sel)s} == 0)
            ||| % { sel: sel, ratio: t.ratio, hours: t.hours },
            '{{ $labels.mountpoint }} on {{ $labels.instance }} is running out of inodes%s' % (if sev == 'critical' then ' fast' else ''),
            'Filesystem {{ $labels.device }} at {{ $labels.mountpoint }} has {{ $value | humanizePercentage }} of its inodes free and, at the rate of the last 6 hours, will have none within %s.' % text.duration('%dh' % t.hours),
            severity=sev,
          ))
          // Few inodes free: new files fail before space runs out.
          + perSeverity('HostFilesystemAlmostOutOfFiles', function(sev, ratio) alert(
            'HostFilesystemAlmostOutOfFiles',
            |||
              (system_filesystem_files_free{%(sel)s} / system_filesystem_files{%(sel)s} < %(ratio).10g
              and system_filesystem_readonly{%(sel)s} == 0)
            ||| % { sel: sel, ratio: ratio },
            '{{ $labels.mountpoint }} on {{ $labels.instance }} has {{ $value | humanizePercentage }} inodes left',
            'Filesystem {{ $labels.device }} at {{ $labels.mountpoint }} has had less than %s of its inodes free for %s: new files will fail before space runs out.' % [text.percent(ratio), text.duration(a.HostFilesystemAlmostOutOfFiles['for'])],
            severity=sev,
          ))
          // File handles allocated, of the host's maximum.
          + perSeverity('HostFileDescriptorLimit', function(sev, ratio) alert(
            'HostFileDescriptorLimit',
            'system_filefd_allocated{%(sel)s} / system_filefd_maximum{%(sel)s} > %(ratio).10g' % { sel: sel, ratio: ratio },
            '{{ $labels.instance }} uses {{ $value | humanizePercentage }} of its file handles',
            'The host has allocated more than %s of its file handles (fs.file-max) for %s: opening files and sockets will fail at the limit.' % [text.percent(ratio), text.duration(a.HostFileDescriptorLimit['for'])],
            severity=sev,
          ))
          + [
            // Connection tracking entries, of the limit: new connections are dropped at it.
            alert(
              'HostConntrackLimit',
              'system_conntrack_entries{%(sel)s} / system_conntrack_entries_limit{%(sel)s} > %(ratio).10g' % { sel: sel, ratio: a.HostConntrackLimit.ratio },
              '{{ $labels.instance }} uses {{ $value | humanizePercentage }} of its conntrack entries',
              'Connection tracking uses more than %s of nf_conntrack_max: at the limit the kernel drops new connections.' % text.percent(a.HostConntrackLimit.ratio),
            ),
            // The kernel's clock not synchronised (a time daemon stopped or cannot reach its
            // servers): node-mixin's NodeClockNotSynchronising.
            alert(
              'HostClockNotSynchronising',
              |||
                min_over_time(system_timex_sync_status{%(sel)s}[5m]) == 0
                and system_timex_maxerror_seconds{%(sel)s} >= 16
              ||| % { sel: sel },
              'The clock of {{ $labels.instance }} is not synchronising',
              "The kernel's clock has not been synchronised by a time daemon (NTP, PTP) for %s; check chrony, ntpd or systemd-timesyncd on the host." % text.duration(a.HostClockNotSynchronising['for']),
            ),
            // An offset over the threshold that is not shrinking: node-mixin's
            // NodeClockSkewDetected.
            alert(
              'HostClockSkewDetected',
              |||
                (system_timex_offset_seconds{%(sel)s} > %(offset).10g and deriv(system_timex_offset_seconds{%(sel)s}[5m]) >= 0)
                or
                (system_timex_offset_seconds{%(sel)s} < -%(offset).10g and deriv(system_timex_offset_seconds{%(sel)s}[5m]) <= 0)
              ||| % { sel: sel, offset: a.HostClockSkewDetected.offset },
              'The clock of {{ $labels.instance }} is off by {{ $value | humanizeDuration }}',
              "The kernel clock's offset has been over %s and not shrinking for %s; check the time daemon on the host." % [text.ms(a.HostClockSkewDetected.offset), text.duration(a.HostClockSkewDetected['for'])],
            ),
            // Memory in use (MemTotal - MemAvailable).
            alert(
              'HostMemoryHighUtilization',
              'system_memory_used_bytes{%(sel)s} / system_memory_total_bytes{%(sel)s} > %(ratio).10g' % { sel: sel, ratio: a.HostMemoryHighUtilization.ratio },
              '{{ $labels.instance }} uses {{ $value | humanizePercentage }} of its memory',
              'Memory in use (MemTotal - MemAvailable) has been over %s for %s.' % [text.percent(a.HostMemoryHighUtilization.ratio), text.duration(a.HostMemoryHighUtilization['for'])],
            ),
            // Busy CPUs: node-mixin's NodeCPUHighUsage (info: worth a look, not a page).
            alert(
              'HostCPUHighUsage',
              |||
                sum without (mode, cpu) (rate(system_cpu_time_seconds_total{%(sel)s, mode!~"idle|iowait"}[2m]))
                  /
                system_cpus{%(sel)s} > %(ratio).10g
              ||| % { sel: sel, ratio: a.HostCPUHighUsage.ratio },
              '{{ $labels.instance }}: CPUs {{ $value | humanizePercentage }} busy',
              'The CPUs of {{ $labels.instance }} have been busy (all modes but idle and iowait) over %s of the time for %s: work may queue.' % [text.percent(a.HostCPUHighUsage.ratio), text.duration(a.HostCPUHighUsage['for'])],
            ),
            // Runnable processes per CPU: node-mixin's NodeSystemSaturation.
            alert(
              'HostSystemSaturation',
              'system_load_average{%(sel)s, period="1m"} / ignoring (period) system_cpus{%(sel)s} > %(perCpu).10g' % { sel: sel, perCpu: a.HostSystemSaturation.perCpu },
              '{{ $labels.instance }}: load {{ $value | humanize }} per CPU',
              'The 1-minute load average of {{ $labels.instance }} has been over %g per CPU for %s: processes wait for CPU or uninterruptible I/O.' % [a.HostSystemSaturation.perCpu, text.duration(a.HostSystemSaturation['for'])],
            ),
            // Requests queued on a disk: node-mixin's NodeDiskIOSaturation (the weighted I/O
            // time grows by the number of requests in flight each second).
            alert(
              'HostDiskIOSaturation',
              'rate(system_disk_io_weighted_time_seconds_total{%(sel)s}[5m]) > %(queue).10g' % { sel: sel, queue: a.HostDiskIOSaturation.queue },
              'Disk {{ $labels.device }} on {{ $labels.instance }}: {{ $value | humanize }} requests queued',
              'The average queue of {{ $labels.device }} (weighted I/O time per second) has been over %g requests for %s: I/O waits.' % [a.HostDiskIOSaturation.queue, text.duration(a.HostDiskIOSaturation['for'])],
            ),
            // Packets in error on an interface, of its packets.
            alert(
              'HostNetworkErrors',
              |||
                rate(system_network_errors_total{%(sel)s}[2m]) / rate(system_network_packets_total{%(sel)s}[2m]) > %(ratio).10g
              ||| % { sel: sel, ratio: a.HostNetworkErrors.ratio },
              '{{ $labels.device }} on {{ $labels.instance }}: {{ $value | humanizePercentage }} of {{ $labels.direction }} packets in error',
              'More than %s of the {{ $labels.direction }} packets of {{ $labels.device }} have been errors for %s.' % [text.percent(a.HostNetworkErrors.ratio), text.duration(a.HostNetworkErrors['for'])],
            ),
          ],
      },
    ],
  },
}
