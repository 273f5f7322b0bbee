// Thresholds and durations of the configuration written as the alerts' descriptions say them.
{
  // 0.05 -> '5%'
  percent(ratio):: std.format('%g%%', ratio * 100),
  // 0.5 -> '500 ms'; 0.131072 -> '131 ms'; 2 -> '2 s'
  ms(seconds):: if seconds < 1 then '%d ms' % std.floor(seconds * 1000 + 0.5) else std.format('%.10g s', seconds),
  // Prometheus durations of one unit: '10m' -> '10 minutes', '1h' -> 'an hour'; others
  // ('1h30m') as they are; no `for` at all: 'one evaluation'.
  duration(d)::
    local units = { s: 'second', m: 'minute', h: 'hour', d: 'day' };
    local n = std.length(d);
    local digits = if d == null then '' else std.substr(d, 0, n - 1);
    local unit = if d == null then null else std.get(units, std.substr(d, n - 1, 1));
    local simple = unit != null && digits != '' && std.length([c for c in std.stringChars(digits) if !std.member('0123456789', c)]) == 0;
    if d == null then 'one evaluation'
    else if !simple then d
    else
      local k = std.parseInt(digits);
      if k == 1 then (if unit == 'hour' then 'an hour' else 'a ' + unit) else '%d %ss' % [k, unit],
  // Hours from seconds: 86400 -> '24 hours'.
  hours(seconds):: self.duration('%dh' % std.floor(seconds / 3600)),
}
