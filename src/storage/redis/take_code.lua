-- KEYS[1]: code key. ARGV: now.
-- {'first', field, value, ...}: the code, taken now for the first time;
-- {'again', session_id or ''}: taken before, now marked replayed; {}: no such code.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
if redis.call('HSETNX', KEYS[1], 'used_at', ARGV[1]) == 1 then
  local fields = redis.call('HGETALL', KEYS[1])
  table.insert(fields, 1, 'first')
  return fields
end
redis.call('HSET', KEYS[1], 'replayed', '1')
return {'again', redis.call('HGET', KEYS[1], 'session_id') or ''}
