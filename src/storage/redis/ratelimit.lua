-- GCRA over several keys at once, all or nothing: a request passes only when every limit
-- allows it, and only then is it counted against each. Redis's own clock is the time, so
-- instances with skewed clocks share one view.
-- KEYS: one per limit. ARGV: for each key, its emission interval and its burst times the
-- interval, both in microseconds.
-- Returns, per key: {allowed (1/0), µs until a retry passes or remaining slack, µs until full}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local results, tats, refused = {}, {}, false
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local capacity = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - capacity
  if now < allow_at then
    refused = true
    results[i] = {0, allow_at - now, tat - now}
  else
    tats[i] = new_tat
    results[i] = {1, capacity - (new_tat - now), new_tat - now}
  end
end
if not refused then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, tats[i], 'PX', math.floor((tats[i] - now) / 1000) + 1)
  end
end
return results
