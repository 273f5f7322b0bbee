// Thresholds and durations of the configuration written as the alerts' descriptions say them.
{
  // 0.05 -> '5%'
  percent(ratio):: std.format('%g%%', ratio * 100),
  // 0.5 -> '500 ms'; 0.131072 -> '131 ms'; 2 -> '2 s'
  ms(seconds):: if seconds < 1 then '%d ms' % std.floor(seconds * 1000 + 0.5) else std.format('%.10g s', seconds),
  // Prometheus durations of one unit: '10m' -> '10 minutes', '1h' -> 'an hour'.
  duration(d)::
    local n = std.parseInt(std.substr(d, 0, std.length(d) - 1));
    local unit = { s: 'second', m: 'minute', h: 'hour', d: 'day' }[std.substr(d, std.length(d) - 1, 1)];
    if n == 1 then (if unit == 'hour' then 'an hour' else 'a ' + unit) else '%d %ss' % [n, unit],
  // Hours from seconds: 86400 -> '24 hours'.
  hours(seconds):: self.duration('%dh' % std.floor(seconds / 3600)),
}
