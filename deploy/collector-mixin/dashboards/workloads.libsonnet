local g = import '../lib/grafana.libsonnet';

function(config)
  local sel = 'job=~"$job", instance=~"$instance"';
  g.dashboard(config, 'collector-workloads', 'Collector / Containers & processes', 'Network and disk bytes per cgroup (container, systemd unit), HTTP per service, and the collector\'s own health.', 'containers') {
    templating: { list: [
      g.datasourceVar(config),
      g.jobVar(config),
      g.instanceVar,
      g.queryVar('k8s_namespace', 'Kubernetes namespace', 'label_values(cgroup_network_bytes_total{' + sel + '}, k8s_namespace_name)') { allValue: '.*' },
      g.queryVar('pod', 'Pod', 'label_values(cgroup_network_bytes_total{' + sel + ', k8s_namespace_name=~"$k8s_namespace"}, k8s_pod_name)') { allValue: '.*' },
      g.queryVar('service', 'Service', 'label_values({__name__=~"http_(server|client)_request_duration_seconds_count", ' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod"}, service_name)') { allValue: '.*' },
    ] },
    panels: [
      g.row('Containers and cgroups', 1, 0),
      g.panel('timeseries', 'Network receive by cgroup (top 10)', 'IP bytes received by the sockets of each cgroup (container, systemd unit), loopback included.', { x: 0, y: 1, w: 12, h: 8 }, 2, [
        g.target('topk(10, sum by (k8s_namespace_name, k8s_pod_name, k8s_container_name, container_name, cgroup, container_id, systemd_unit) (rate(cgroup_network_bytes_total{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod", direction="receive"}[$__rate_interval])))', '{{k8s_namespace_name}} {{k8s_pod_name}} {{k8s_container_name}}{{container_name}} {{cgroup}}'),
      ], { fieldConfig: { defaults: { unit: 'Bps' } } }),
      g.panel('timeseries', 'Network transmit by cgroup (top 10)', '', { x: 12, y: 1, w: 12, h: 8 }, 3, [
        g.target('topk(10, sum by (k8s_namespace_name, k8s_pod_name, k8s_container_name, container_name, cgroup, container_id, systemd_unit) (rate(cgroup_network_bytes_total{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod", direction="transmit"}[$__rate_interval])))', '{{k8s_namespace_name}} {{k8s_pod_name}} {{k8s_container_name}}{{container_name}} {{cgroup}}'),
      ], { fieldConfig: { defaults: { unit: 'Bps' } } }),
      g.panel('timeseries', 'Disk bytes by cgroup and operation (top 10)', 'Bytes submitted to block devices by each cgroup. Buffered writes are written back by kernel threads of the root cgroup.', { x: 0, y: 9, w: 12, h: 8 }, 4, [
        g.target('topk(10, sum by (k8s_namespace_name, k8s_pod_name, k8s_container_name, container_name, cgroup, container_id, systemd_unit, operation) (rate(cgroup_disk_io_bytes_total{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod"}[$__rate_interval])))', '{{k8s_namespace_name}} {{k8s_pod_name}} {{k8s_container_name}}{{container_name}} {{cgroup}} {{operation}}'),
      ], { fieldConfig: { defaults: { unit: 'Bps' } } }),
      g.panel('table', 'Cgroups: network and disk bytes/s', 'Value #A: network bytes/s (both directions); Value #B: disk bytes/s. Bytes per second over the panel\'s rate interval, network (received and sent) and disk (read and written), per cgroup.', { x: 12, y: 9, w: 12, h: 8 }, 5, [
        g.target('sum by (k8s_namespace_name, k8s_pod_name, k8s_container_name, container_name, cgroup, container_id, systemd_unit) (rate(cgroup_network_bytes_total{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod"}[$__rate_interval]))', '__auto') + { range: false, instant: true, format: 'table' },
        g.target('sum by (k8s_namespace_name, k8s_pod_name, k8s_container_name, container_name, cgroup, container_id, systemd_unit) (rate(cgroup_disk_io_bytes_total{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod"}[$__rate_interval]))', '__auto') + { range: false, instant: true, format: 'table' },
      ], {
        fieldConfig: {
          defaults: { unit: 'Bps' },
          overrides: [{ matcher: { id: 'byType', options: 'string' }, properties: [{ id: 'unit', value: 'string' }] }],
        },
        options: { showHeader: true, cellHeight: 'sm' },
        transformations: [
          { id: 'merge', options: {} },
          {
            id: 'organize',
            options: {
              excludeByName: { Time: true, __name__: true },
              renameByName: {
                'Value #A': 'Network (both directions)',
                'Value #B': 'Disk I/O (read and write)',
                k8s_namespace_name: 'Namespace',
                k8s_pod_name: 'Pod',
                k8s_container_name: 'Container',
                container_name: 'Container (Docker)',
                cgroup: 'Cgroup',
                container_id: 'Container id',
                systemd_unit: 'Systemd unit',
              },
            },
          },
        ],
      }),
      g.row('HTTP per service', 6, 17),
      g.panel('timeseries', 'Requests/s by service', '', { x: 0, y: 18, w: 8, h: 8 }, 7, [
        g.target('sum by (service_name) (rate(http_server_request_duration_seconds_count{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod", service_name=~"$service"}[$__rate_interval]))', '{{service_name}}'),
      ], { fieldConfig: { defaults: { unit: 'reqps', links: [g.serviceLink('collector-http', 'HTTP services')] } } }),
      g.panel('timeseries', '5xx ratio by service', '', { x: 8, y: 18, w: 8, h: 8 }, 8, [
        g.target('(sum by (service_name) (rate(http_server_request_duration_seconds_count{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod", service_name=~"$service", http_response_status_code=~"5.."}[$__rate_interval])) or 0 * sum by (service_name) (rate(http_server_request_duration_seconds_count{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod", service_name=~"$service"}[$__rate_interval]))) / sum by (service_name) (rate(http_server_request_duration_seconds_count{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod", service_name=~"$service"}[$__rate_interval]))', '{{service_name}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit', links: [g.serviceLink('collector-http', 'HTTP services')] } } }),
      g.panel('timeseries', 'p95 latency by service', '', { x: 16, y: 18, w: 8, h: 8 }, 9, [
        g.target('histogram_quantile(0.95, sum by (service_name, le) (rate(http_server_request_duration_seconds_bucket{' + sel + ', k8s_namespace_name=~"$k8s_namespace", k8s_pod_name=~"$pod", service_name=~"$service"}[$__rate_interval])))', '{{service_name}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 's', links: [g.serviceLink('collector-http', 'HTTP services')] } } }),
      g.row('Collector health', 10, 26),
      g.panel('stat', 'Targets up', 'Share of collector targets Prometheus scraped successfully.', { x: 0, y: 27, w: 6, h: 4 }, 11, [
        g.target('sum(up{' + sel + '}) / count(up{' + sel + '})', 'Targets up'),
      ], {
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            thresholds: { steps: [{ color: 'red', value: null }, { color: 'green', value: 1 }] },
          },
        },
      }),
      g.panel('stat', 'eBPF programs attached', '', { x: 6, y: 27, w: 6, h: 4 }, 12, [
        g.target('sum(collector_bpf_program_attached{' + sel + '}) / count(collector_bpf_program_attached{' + sel + '})', 'eBPF programs attached'),
      ], {
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            thresholds: { steps: [{ color: 'red', value: null }, { color: 'green', value: 1 }] },
          },
        },
      }),
      g.panel('stat', 'Collectors failing', '', { x: 12, y: 27, w: 6, h: 4 }, 13, [
        g.target('count(collector_scrape_collector_success{' + sel + '} == 0) or vector(0)', 'Collectors failing'),
      ], {
        fieldConfig: {
          defaults: {
            unit: 'short',
            thresholds: { steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }] },
          },
        },
      }),
      g.panel('stat', 'Kernel events dropped/s', 'All reasons; see the drops panel for which.', { x: 18, y: 27, w: 6, h: 4 }, 14, [
        g.target('sum(rate(collector_bpf_events_dropped_total{' + sel + '}[$__rate_interval]))', 'Kernel events dropped/s'),
      ], { fieldConfig: { defaults: { unit: 'short' } } }),
      g.panel('timeseries', 'Scrape duration', '', { x: 0, y: 31, w: 12, h: 8 }, 15, [
        g.target('scrape_duration_seconds{' + sel + '}', '{{instance}} total (Prometheus)'),
        g.target('collector_scrape_collector_duration_seconds{' + sel + '}', '{{instance}} {{collector}}'),
      ], { fieldConfig: { defaults: { unit: 's' } } }),
      g.panel('timeseries', 'Collector success and program attachment', '1 = succeeded on the last scrape / attached; 0 = failed / detached.', { x: 12, y: 31, w: 12, h: 8 }, 16, [
        g.target('min by (instance, collector) (collector_scrape_collector_success{' + sel + '})', '{{instance}} {{collector}} success'),
        g.target('collector_bpf_program_attached{' + sel + '}', '{{instance}} {{program}} attached'),
      ], { fieldConfig: { defaults: { unit: 'short', max: 1 } } }),
      g.panel('timeseries', 'Kernel events dropped by reason', 'Events the kernel programs could not record (map full, unmatched completions, HTTP desync ...); see docs/metrics.md.', { x: 0, y: 39, w: 12, h: 8 }, 17, [
        g.target('sum by (instance, reason) (rate(collector_bpf_events_dropped_total{' + sel + '}[$__rate_interval]))', '{{instance}} {{reason}}'),
      ], { fieldConfig: { defaults: { unit: 'short' } } }),
      g.panel('timeseries', 'Collector CPU and memory', 'CPU in cores on the left axis, resident memory on the right.', { x: 12, y: 39, w: 12, h: 8 }, 18, [
        g.target('rate(process_cpu_seconds_total{' + sel + '}[$__rate_interval])', '{{instance}} CPU (cores)'),
        g.target('process_resident_memory_bytes{' + sel + '} / 2^20', '{{instance}} RSS (MiB)'),
      ], {
        fieldConfig: {
          defaults: { unit: 'short' },
          overrides: [
            {
              matcher: { id: 'byFrameRefID', options: 'B' },
              properties: [{ id: 'unit', value: 'decmbytes' }, { id: 'custom.axisPlacement', value: 'right' }],
            },
          ],
        },
      }),
      g.panel('table', 'Versions', '', { x: 0, y: 47, w: 24, h: 5 }, 19, [
        g.target('collector_build_info{' + sel + '}', '__auto') + { range: false, instant: true, format: 'table' },
      ], {
        options: { showHeader: true, cellHeight: 'sm' },
        transformations: [
          { id: 'merge', options: {} },
          { id: 'organize', options: { excludeByName: { Time: true, __name__: true } } },
        ],
      }),
      g.panel('table', 'Collectors: running, off, and why', 'Every collector of each instance: 1 running, 0 off (disabled by flag, or skipped at start-up: then the reason column says why, e.g. no tracefs, no cgroup v2, a missing privilege or kernel feature). A skipped collector\'s metrics are absent, and the alerts on them cannot fire (CollectorSkipped).', { x: 0, y: 52, w: 12, h: 8 }, 20, [
        g.target('(collector_collector_enabled{' + sel + '} + on (job, instance, collector) group_left (reason) (0 * collector_collector_skipped_info{' + sel + '})) or on (job, instance, collector) collector_collector_enabled{' + sel + '}', '__auto') + { range: false, instant: true, format: 'table' },
      ], {
        fieldConfig: {
          defaults: {
            mappings: [
              {
                type: 'value',
                options: { '1': { text: 'running', color: 'green' }, '0': { text: 'off', color: 'orange' } },
              },
            ],
          },
        },
        options: { showHeader: true, cellHeight: 'sm' },
        transformations: [
          { id: 'merge', options: {} },
          { id: 'organize', options: { excludeByName: { Time: true, __name__: true } } },
        ],
      }),
      g.panel('table', 'eBPF programs: attached or not', 'Every kernel program of each instance with its hook: 1 attached, 0 not (what it measures is then missing or incomplete; the collector\'s start-up log says why; CollectorProgramDetached).', { x: 12, y: 52, w: 12, h: 8 }, 21, [
        g.target('collector_bpf_program_attached{' + sel + '}', '__auto') + { range: false, instant: true, format: 'table' },
      ], {
        fieldConfig: {
          defaults: {
            mappings: [
              {
                type: 'value',
                options: { '1': { text: 'attached', color: 'green' }, '0': { text: 'not attached', color: 'red' } },
              },
            ],
          },
        },
        options: { showHeader: true, cellHeight: 'sm' },
        transformations: [
          { id: 'merge', options: {} },
          { id: 'organize', options: { excludeByName: { Time: true, __name__: true } } },
        ],
      }),
    ],
  }
