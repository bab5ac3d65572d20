-- KEYS[1]: code key. ARGV: session id.
-- Records the session the code's exchange opened; 0 when the code was replayed meanwhile.
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
redis.call('HSET', KEYS[1], 'session_id', ARGV[1])
if redis.call('HGET', KEYS[1], 'replayed') == '1' then return 0 end
return 1
