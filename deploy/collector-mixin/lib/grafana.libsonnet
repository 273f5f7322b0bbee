// The few shapes the dashboards are made of (Grafana 10/11 JSON, schemaVersion 39), so that each
// dashboard file says only what is particular to its panels. Every query goes to the
// dashboard's $datasource variable.
local ds = { type: 'prometheus', uid: '${datasource}' };

// What a panel of each type has unless it says otherwise (its `patch`, an RFC 7386 merge patch:
// null removes a field).
local defaults = {
  stat: {
    fieldConfig: {
      defaults: {
        thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }] },
        color: { mode: 'thresholds' },
      },
      overrides: [],
    },
    options: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: 'value',
      graphMode: 'area',
      textMode: 'auto',
      justifyMode: 'auto',
      orientation: 'auto',
    },
  },
  timeseries: {
    fieldConfig: {
      defaults: {
        custom: {
          drawStyle: 'line',
          lineWidth: 1,
          fillOpacity: 10,
          showPoints: 'never',
          spanNulls: false,
          stacking: { mode: 'none', group: 'A' },
        },
        min: 0,
      },
      overrides: [],
    },
    options: {
      legend: { displayMode: 'table', placement: 'bottom', showLegend: true, calcs: ['mean', 'max'] },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
  },
  heatmap: {
    fieldConfig: {
      defaults: {
        custom: {
          hideFrom: { legend: false, tooltip: false, viz: false },
          scaleDistribution: { type: 'linear' },
        },
      },
      overrides: [],
    },
    options: {
      calculate: false,
      cellGap: 1,
      yAxis: { axisPlacement: 'left', unit: 's' },
      rowsFrame: { layout: 'auto' },
      color: {
        mode: 'scheme',
        scheme: 'Oranges',
        fill: 'dark-orange',
        scale: 'exponential',
        exponent: 0.5,
        steps: 64,
        reverse: false,
      },
      filterValues: { le: 1e-09 },
      cellValues: { unit: 'reqps' },
      tooltip: { mode: 'single', yHistogram: true, showColorScale: false },
      legend: { show: true },
      exemplars: { color: 'rgba(255,0,255,0.7)' },
    },
  },
  table: {
    fieldConfig: { defaults: {}, overrides: [] },
    options: {},
  },
};

{
  // A dashboard of the collector: the layout, links and time settings they all share; the
  // caller adds templating and panels. Tagged with the configured tag, which the links find,
  // and its own.
  dashboard(config, uid, title, description, tag):: {
    uid: uid,
    title: title,
    description: description,
    tags: [config.dashboardTag, tag],
    schemaVersion: 39,
    version: 1,
    editable: true,
    graphTooltip: 1,
    refresh: config.dashboardRefresh,
    time: { from: config.dashboardPeriod, to: 'now' },
    timepicker: {},
    timezone: config.dashboardTimezone,
    fiscalYearStartMonth: 0,
    liveNow: false,
    weekStart: '',
    annotations: { list: [] },
    links: [
      {
        title: 'Collector dashboards',
        type: 'dashboards',
        tags: [config.dashboardTag],
        asDropdown: true,
        includeVars: true,
        keepTime: true,
        icon: 'external link',
        targetBlank: false,
        tooltip: '',
        url: '',
      },
    ],
  },

  // The Prometheus data source to query: any of the user's, the configured one selected.
  datasourceVar(config):: {
    name: 'datasource',
    label: 'Data source',
    type: 'datasource',
    query: 'prometheus',
    current: { selected: false, text: config.datasourceName, value: config.datasourceUid },
    hide: 0,
    includeAll: false,
    multi: false,
    options: [],
    refresh: 1,
    regex: config.datasourceFilterRegex,
  },

  // A multi-value variable from label_values(query); All by default.
  queryVar(name, label, query):: {
    name: name,
    label: label,
    type: 'query',
    datasource: ds,
    definition: query,
    query: { qryType: 1, query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery' },
    refresh: 2,
    includeAll: true,
    multi: true,
    sort: 1,
    hide: 0,
    current: { selected: true, text: ['All'], value: ['$__all'] },
    options: [],
    regex: '',
  },

  // The jobs that scrape collectors (the configured selector), and their instances from `up`,
  // so that a collector that never answered is listed too.
  jobVar(config):: self.queryVar('job', 'Job', 'label_values(collector_build_info{%s}, job)' % config.collectorSelector),
  instanceVar:: self.queryVar('instance', 'Instance', 'label_values(up{job=~"$job"}, instance)'),

  target(expr, legend):: {
    datasource: ds,
    editorMode: 'code',
    expr: expr,
    legendFormat: legend,
    range: true,
    instant: false,
  },

  // A panel: its targets get refIds A, B, ... in order.
  panel(type, title, description, gridPos, id, targets, patch={}):: std.mergePatch(defaults[type], patch) {
    type: type,
    title: title,
    description: description,
    datasource: ds,
    targets: [targets[i] { refId: std.char(65 + i) } for i in std.range(0, std.length(targets) - 1)],
    id: id,
    gridPos: gridPos,
  },

  // A data link from a series to another of the dashboards, for the series' service (its
  // service_name label), keeping the job, instance and time range: patch a panel with
  // { fieldConfig: { defaults: { links: [g.serviceLink('collector-http', 'HTTP services')] } } }.
  serviceLink(uid, what):: {
    title: what + ' of ${__field.labels.service_name}',
    url: '/d/%s?${job:queryparam}&${instance:queryparam}&var-service=${__field.labels.service_name}&${__url_time_range}' % uid,
  },

  row(title, id, y):: {
    id: id,
    type: 'row',
    title: title,
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: y },
    panels: [],
  },
}
