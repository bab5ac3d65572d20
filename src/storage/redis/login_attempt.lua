-- A login attempt under one key (the account name and address), atomically: the rule of
-- LockoutStore, as storage::sql::lockout applies it.
-- KEYS[1]: the key's hash. ARGV: 1 'begin' or 'finish', 2 now, 3 window start, 4 threshold,
-- 5 lock end (finish), 6 '1' when the attempt succeeded (finish), 7 window length.
-- begin returns {1, 0} when admitted, {0, locked_until or 0} when refused;
-- finish returns {2, lock end} when this failure locked the key, else {0, 0}.
local now = tonumber(ARGV[2])
local threshold = tonumber(ARGV[4])
local f = redis.call('HMGET', KEYS[1], 'failures', 'pending', 'window_start', 'locked_until')
local failures = tonumber(f[1]) or 0
local pending = tonumber(f[2]) or 0
local window_start = tonumber(f[3])
local locked_until = tonumber(f[4]) or 0
local locked = locked_until > now
-- The hash lives until its window and its lock have both passed.
local function keep()
  local until_ = math.max(window_start + tonumber(ARGV[7]), locked_until)
  redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', until_))
end
if ARGV[1] == 'begin' then
  if locked then return {0, locked_until} end
  if not window_start or window_start <= tonumber(ARGV[3]) then
    failures, pending, window_start = 0, 0, now
  end
  if failures + pending >= threshold then return {0, 0} end
  redis.call('HSET', KEYS[1], 'failures', failures, 'pending', pending + 1,
    'window_start', string.format('%.0f', window_start))
  keep()
  return {1, 0}
end
if not window_start then return {0, 0} end
if pending > 0 then pending = pending - 1 end
local result = {0, 0}
if ARGV[6] == '1' then
  failures = 0
elseif failures + 1 >= threshold and not locked then
  failures, window_start, locked_until = 0, now, tonumber(ARGV[5])
  result = {2, locked_until}
else
  failures = failures + 1
end
redis.call('HSET', KEYS[1], 'failures', failures, 'pending', pending,
  'window_start', string.format('%.0f', window_start),
  'locked_until', string.format('%.0f', locked_until))
keep()
return result
