-- Remove a member at once (graceful stop).
-- KEYS: members, traits, info, version, commands list; ARGV: identity, channel
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[5])
if removed == 1 then
  redis.call('INCR', KEYS[4])
  redis.call('PUBLISH', ARGV[2], 'state')
end
return removed
