-- Release a worker lock only if the caller's token still holds it, and tell waiters.
-- KEYS: lock; ARGV: token, channel, lock name
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then
  return 0
end
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'released ' .. ARGV[3])
  return 1
end
return 0
