-- Counts a failed login. KEYS[1]: the account's failure hash. ARGV: now, window start,
-- threshold, lock until. Returns the lock's end when this failure locked the account, else 0.
local f = redis.call('HMGET', KEYS[1], 'failures', 'window_start', 'locked_until')
local now = tonumber(ARGV[1])
local failures = tonumber(f[1]) or 0
local window_start = tonumber(f[2]) or now
if not f[2] or window_start <= tonumber(ARGV[2]) then
  failures = 0
  window_start = now
end
failures = failures + 1
local locked = f[3] and tonumber(f[3]) > now
if failures >= tonumber(ARGV[3]) and not locked then
  redis.call('HSET', KEYS[1], 'failures', 0, 'window_start', ARGV[1], 'locked_until', ARGV[4])
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
  return tonumber(ARGV[4])
end
redis.call('HSET', KEYS[1], 'failures', failures, 'window_start', window_start)
local expire = window_start + (now - tonumber(ARGV[2]))
if locked and tonumber(f[3]) > expire then expire = tonumber(f[3]) end
redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', expire))
return 0
