-- Extend a worker lock only if the caller's token still holds it in the group's current
-- incarnation (a lock restored from an older state of the backend is not renewed).
-- KEYS: lock, incarnation (hash); ARGV: token, key ttl ms
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('TYPE', KEYS[2])['ok'] ~= 'hash' then
  return 0
end
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  local lock_inc = string.match(current, '^%S+ %d+ (%S+) %S+$')
  if lock_inc ~= nil and lock_inc ~= redis.call('HGET', KEYS[2], 'id') then
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
