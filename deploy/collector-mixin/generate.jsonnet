// What deploy/ ships, by path under deploy/, made with the default configuration:
//   jsonnet -J deploy/collector-mixin deploy/collector-mixin/generate.jsonnet
// collector/tests/deploy.rs writes each file from this (YAML for the rules, JSON for the
// dashboards, plus the Kubernetes objects made of them) and fails when a checked-in file
// differs: COLLECTOR_WRITE_DEPLOY=1 cargo test -p collector --test deploy generated
local mixin = import 'mixin.libsonnet';
{
  'prometheus/rules/collector.yml': { groups: mixin.prometheusRules.groups + mixin.prometheusAlerts.groups },
} + {
  ['grafana/dashboards/' + name]: mixin.grafanaDashboards[name]
  for name in std.objectFields(mixin.grafanaDashboards)
}
