local g = import '../lib/grafana.libsonnet';

function(config)
  local sel = 'job=~"$job", instance=~"$instance"';
  g.dashboard(config, 'collector-host', 'Collector / Host', 'CPU, memory, load, pressure, disks, network interfaces, filesystems, file handles, connection tracking and the clock of each host.', 'host') {
    templating: { list: [
      g.datasourceVar(config),
      g.jobVar(config),
      g.instanceVar,
      g.queryVar('disk', 'Disk', 'label_values(system_disk_io_operations_total{' + sel + '}, device)'),
      g.queryVar('interface', 'Interface', 'label_values(system_network_bytes_total{' + sel + '}, device)'),
    ] },
    panels: [
      g.row('Overview', 1, 0),
      g.panel('stat', 'CPU busy', 'Share of all selected CPUs\' time not idle (user, nice, system, irq, softirq, steal) over the panel\'s rate interval, from the CPU time counters (a rate does not depend on who else scrapes; the system_cpu_usage_ratio gauge\'s window does).', { x: 0, y: 1, w: 4, h: 4 }, 2, [
        g.target('1 - sum(rate(system_cpu_time_seconds_total{' + sel + ', mode=~"idle|iowait"}[$__rate_interval])) / sum(rate(system_cpu_time_seconds_total{' + sel + '}[$__rate_interval]))', 'CPU busy'),
      ], {
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            thresholds: {
              steps: [{ color: 'green', value: null }, { color: 'orange', value: 0.7 }, { color: 'red', value: 0.9 }],
            },
          },
        },
      }),
      g.panel('stat', 'Memory used', 'MemTotal − MemAvailable over MemTotal.', { x: 4, y: 1, w: 4, h: 4 }, 3, [
        g.target('sum(system_memory_used_bytes{' + sel + '}) / sum(system_memory_total_bytes{' + sel + '})', 'Memory used'),
      ], {
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            thresholds: {
              steps: [{ color: 'green', value: null }, { color: 'orange', value: 0.8 }, { color: 'red', value: 0.95 }],
            },
          },
        },
      }),
      g.panel('stat', 'Load (1m) per CPU', 'The 1-minute load average over the CPUs (summed over the selected hosts): above 1, tasks wait for a CPU or for I/O.', { x: 8, y: 1, w: 4, h: 4 }, 4, [
        g.target('sum(system_load_average{' + sel + ', period="1m"}) / sum(system_cpus{' + sel + '})', 'Load (1m)'),
      ], { fieldConfig: { defaults: { unit: 'short', decimals: 2 } } }),
      g.panel('stat', 'CPUs', 'Logical CPUs of the selected hosts (summed, as the memory and swap figures).', { x: 12, y: 1, w: 4, h: 4 }, 5, [
        g.target('sum(system_cpus{' + sel + '})', 'CPUs'),
      ], { fieldConfig: { defaults: { unit: 'short' } } }),
      g.panel('stat', 'Memory total', '', { x: 16, y: 1, w: 4, h: 4 }, 6, [
        g.target('sum(system_memory_total_bytes{' + sel + '})', 'Memory total'),
      ], { fieldConfig: { defaults: { unit: 'bytes' } } }),
      g.panel('stat', 'Swap used', '', { x: 20, y: 1, w: 4, h: 4 }, 7, [
        g.target('sum(system_memory_swap_used_bytes{' + sel + '})', 'Swap used'),
      ], { fieldConfig: { defaults: { unit: 'bytes' } } }),
      g.row('CPU, memory, load, pressure', 8, 5),
      g.panel('timeseries', 'CPU by mode', 'Share of each host\'s CPU time per mode (idle left out), one line per host and mode: the modes of a host add up to its busy share (not stacked, so that several hosts do not add up past 100%).', { x: 0, y: 6, w: 12, h: 8 }, 9, [
        g.target('sum by (instance, mode) (rate(system_cpu_time_seconds_total{' + sel + ', mode!="idle"}[$__rate_interval])) / on (instance) group_left max by (instance) (system_cpus{' + sel + '})', '{{instance}} {{mode}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit', custom: { fillOpacity: 40 } } } }),
      g.panel('timeseries', 'CPU busy per CPU', '', { x: 12, y: 6, w: 12, h: 8 }, 10, [
        g.target('sum by (instance, cpu) (rate(system_cpu_time_seconds_total{' + sel + ', mode!~"idle|iowait"}[$__rate_interval]))', '{{instance}} cpu {{cpu}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit' } } }),
      g.panel('timeseries', 'Memory', '', { x: 0, y: 14, w: 12, h: 8 }, 11, [
        g.target('system_memory_used_bytes{' + sel + '}', '{{instance}} used'),
        g.target('system_memory_cached_bytes{' + sel + '}', '{{instance}} cached'),
        g.target('system_memory_buffers_bytes{' + sel + '}', '{{instance}} buffers'),
        g.target('system_memory_free_bytes{' + sel + '}', '{{instance}} free'),
        g.target('system_memory_available_bytes{' + sel + '}', '{{instance}} available'),
        g.target('system_memory_swap_used_bytes{' + sel + '}', '{{instance}} swap used'),
      ], { fieldConfig: { defaults: { unit: 'bytes' } } }),
      g.panel('timeseries', 'Load average and runnable tasks', '', { x: 12, y: 14, w: 12, h: 8 }, 12, [
        g.target('system_load_average{' + sel + '}', '{{instance}} load {{period}}'),
        g.target('system_processes_running{' + sel + '}', '{{instance}} runnable'),
        g.target('system_cpus{' + sel + '}', '{{instance}} CPUs'),
      ], { fieldConfig: { defaults: { unit: 'short' } } }),
      g.panel('timeseries', 'Pressure (PSI): share of time stalled', 'some: at least one task stalled on the resource; full: all non-idle tasks stalled.', { x: 0, y: 22, w: 24, h: 8 }, 13, [
        g.target('rate(system_pressure_stalled_seconds_total{' + sel + '}[$__rate_interval])', '{{instance}} {{resource}} {{kind}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit' } } }),
      g.row('Disk', 14, 30),
      g.panel('timeseries', 'Disk operations by device and operation', '', { x: 0, y: 31, w: 12, h: 8 }, 15, [
        g.target('sum by (instance, device, operation) (rate(system_disk_io_operations_total{' + sel + ', device=~"$disk"}[$__rate_interval]))', '{{instance}} {{device}} {{operation}}'),
      ], { fieldConfig: { defaults: { unit: 'iops' } } }),
      g.panel('timeseries', 'Disk bytes by device and operation', '', { x: 12, y: 31, w: 12, h: 8 }, 16, [
        g.target('sum by (instance, device, operation) (rate(system_disk_io_bytes_total{' + sel + ', device=~"$disk"}[$__rate_interval]))', '{{instance}} {{device}} {{operation}}'),
      ], { fieldConfig: { defaults: { unit: 'Bps' } } }),
      g.panel('timeseries', 'Disk latency p50 / p99 (eBPF, device service time)', 'From issue to the driver to completion (block_rq_issue → block_rq_complete).', { x: 0, y: 39, w: 12, h: 8 }, 17, [
        g.target('histogram_quantile(0.5, sum by (instance, device, operation, le) (rate(system_disk_io_latency_seconds_bucket{' + sel + ', device=~"$disk"}[$__rate_interval])))', 'p50 {{instance}} {{device}} {{operation}}'),
        g.target('histogram_quantile(0.99, sum by (instance, device, operation, le) (rate(system_disk_io_latency_seconds_bucket{' + sel + ', device=~"$disk"}[$__rate_interval])))', 'p99 {{instance}} {{device}} {{operation}}'),
      ], { fieldConfig: { defaults: { min: null, unit: 's' } } }),
      g.panel('timeseries', 'Disk utilisation and queue size', 'busy: share of time with at least one request in flight (1 = 100%); queue: average requests in flight. Utilisation (share of time busy) on the left axis; the average queue size and the requests in flight on the right.', { x: 12, y: 39, w: 12, h: 8 }, 18, [
        g.target('rate(system_disk_io_time_seconds_total{' + sel + ', device=~"$disk"}[$__rate_interval])', '{{instance}} {{device}} busy'),
        g.target('rate(system_disk_io_weighted_time_seconds_total{' + sel + ', device=~"$disk"}[$__rate_interval])', '{{instance}} {{device}} avg queue'),
        g.target('system_disk_io_in_progress{' + sel + ', device=~"$disk"}', '{{instance}} {{device}} in flight'),
      ], {
        fieldConfig: {
          defaults: { unit: 'percentunit' },
          overrides: [
            {
              matcher: { id: 'byFrameRefID', options: 'B' },
              properties: [{ id: 'unit', value: 'short' }, { id: 'custom.axisPlacement', value: 'right' }],
            },
            {
              matcher: { id: 'byFrameRefID', options: 'C' },
              properties: [{ id: 'unit', value: 'short' }, { id: 'custom.axisPlacement', value: 'right' }],
            },
          ],
        },
      }),
      g.panel('heatmap', 'Disk latency heatmap: $disk', 'Completed requests per second in each service-time bucket (eBPF), all operations; one panel per disk.', { x: 0, y: 47, w: 24, h: 8 }, 19, [
        g.target('sum by (le) (rate(system_disk_io_latency_seconds_bucket{' + sel + ', device=~"$disk"}[$__rate_interval]))', '{{le}}') + { format: 'heatmap' },
      ], { repeat: 'disk', repeatDirection: 'h', maxPerRow: 3 }),
      g.row('Network', 20, 55),
      g.panel('timeseries', 'Network bytes by interface', '', { x: 0, y: 56, w: 12, h: 8 }, 21, [
        g.target('sum by (instance, device, direction) (rate(system_network_bytes_total{' + sel + ', device=~"$interface"}[$__rate_interval]))', '{{instance}} {{device}} {{direction}}'),
      ], { fieldConfig: { defaults: { unit: 'Bps' } } }),
      g.panel('timeseries', 'Network packets by interface', '', { x: 12, y: 56, w: 12, h: 8 }, 22, [
        g.target('sum by (instance, device, direction) (rate(system_network_packets_total{' + sel + ', device=~"$interface"}[$__rate_interval]))', '{{instance}} {{device}} {{direction}}'),
      ], { fieldConfig: { defaults: { unit: 'pps' } } }),
      g.panel('timeseries', 'Network errors and drops by interface', '', { x: 0, y: 64, w: 24, h: 8 }, 23, [
        g.target('sum by (instance, device, direction) (rate(system_network_errors_total{' + sel + ', device=~"$interface"}[$__rate_interval]))', '{{instance}} {{device}} {{direction}} errors'),
        g.target('sum by (instance, device, direction) (rate(system_network_dropped_total{' + sel + ', device=~"$interface"}[$__rate_interval]))', '{{instance}} {{device}} {{direction}} dropped'),
      ], { fieldConfig: { defaults: { unit: 'pps' } } }),
      g.row('Filesystems, file handles, connection tracking, clock', 24, 72),
      g.panel('timeseries', 'Filesystem space used', 'Share of each filesystem\'s size not available to unprivileged users (1 - avail / size; node_exporter\'s semantics). HostFilesystemAlmostOutOfSpace fires below 5% available, HostFilesystemSpaceFillingUp when it will be full within a day.', { x: 0, y: 73, w: 12, h: 8 }, 25, [
        g.target('1 - system_filesystem_avail_bytes{' + sel + '} / system_filesystem_size_bytes{' + sel + '}', '{{instance}} {{mountpoint}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit', max: 1 } } }),
      g.panel('timeseries', 'Filesystem space available', 'Bytes available to unprivileged users per mount (statvfs f_bavail).', { x: 12, y: 73, w: 12, h: 8 }, 26, [
        g.target('system_filesystem_avail_bytes{' + sel + '}', '{{instance}} {{mountpoint}}'),
      ], { fieldConfig: { defaults: { unit: 'bytes' } } }),
      g.panel('timeseries', 'Inodes used', 'Share of each filesystem\'s inodes in use (1 - files_free / files): new files fail at 100% whatever the space left.', { x: 0, y: 81, w: 12, h: 8 }, 27, [
        g.target('1 - system_filesystem_files_free{' + sel + '} / system_filesystem_files{' + sel + '}', '{{instance}} {{mountpoint}}'),
      ], { fieldConfig: { defaults: { unit: 'percentunit', max: 1 } } }),
      g.panel('timeseries', 'File handles and connection tracking used', 'File handles allocated over the host\'s maximum (fs.file-max; HostFileDescriptorLimit at 70%), and connection tracking entries over nf_conntrack_max (HostConntrackLimit at 75%).', { x: 12, y: 81, w: 12, h: 8 }, 28, [
        g.target('system_filefd_allocated{' + sel + '} / system_filefd_maximum{' + sel + '}', '{{instance}} file handles'),
        g.target('system_conntrack_entries{' + sel + '} / system_conntrack_entries_limit{' + sel + '}', '{{instance}} conntrack'),
      ], { fieldConfig: { defaults: { unit: 'percentunit', max: 1 } } }),
      g.panel('timeseries', 'Clock offset (adjtimex)', 'The kernel clock\'s offset from its reference as the time daemon last set it, and its estimated error (HostClockSkewDetected beyond 50 ms).', { x: 0, y: 89, w: 12, h: 8 }, 29, [
        g.target('system_timex_offset_seconds{' + sel + '}', '{{instance}} offset'),
        g.target('system_timex_estimated_error_seconds{' + sel + '}', '{{instance}} estimated error'),
      ], { fieldConfig: { defaults: { min: null, unit: 's' } } }),
      g.panel('timeseries', 'Clock synchronised and uptime', '1 when the kernel\'s clock is synchronised by a time daemon (HostClockNotSynchronising when 0 for 10 minutes); the host\'s uptime in days.', { x: 12, y: 89, w: 12, h: 8 }, 30, [
        g.target('system_timex_sync_status{' + sel + '}', '{{instance}} synchronised'),
        g.target('(time() - system_boot_time_seconds{' + sel + '}) / 86400', '{{instance}} uptime (days)'),
      ], { fieldConfig: { defaults: { unit: 'short' } } }),
    ],
  }
