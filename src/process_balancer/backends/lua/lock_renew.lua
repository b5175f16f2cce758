-- Extend a worker lock only if the caller's token still holds it.
-- KEYS: lock; ARGV: token, ttl ms
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
