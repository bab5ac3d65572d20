-- Logs an attempt and moves its delivery on. ARGV: key prefix, delivery id, status,
-- next attempt at ('' for none), status code ('' for none), error ('' for none), attempt
-- JSON, attempt time.
local P = ARGV[1]
local key = P .. 'delivery:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'status', ARGV[3])
redis.call('HDEL', key, 'locked_until', 'last_status_code', 'last_error', 'next_attempt_at')
if ARGV[5] ~= '' then redis.call('HSET', key, 'last_status_code', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', key, 'last_error', ARGV[6]) end
if ARGV[3] == 'pending' then
  redis.call('HSET', key, 'next_attempt_at', ARGV[4])
  redis.call('ZADD', P .. 'deliveries_due:all', ARGV[4], ARGV[2])
else
  redis.call('HSET', key, 'finished_at', ARGV[8])
  redis.call('ZREM', P .. 'deliveries_due:all', ARGV[2])
  redis.call('ZADD', P .. 'deliveries_finished:all', ARGV[8], ARGV[2])
  if ARGV[3] == 'failed' then redis.call('ZADD', P .. 'deliveries_failed:all', ARGV[8], ARGV[2]) end
end
redis.call('RPUSH', P .. 'delivery_attempts:' .. ARGV[2], ARGV[7])
return 1
