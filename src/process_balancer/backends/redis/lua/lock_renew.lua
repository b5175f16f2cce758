-- Extend a worker lock only if the caller's token still holds it in the group's current
-- incarnation (a lock restored from an older state of the backend is not renewed), and, for a
-- lock taken under a generation gate, only while the job's gate is still at that generation
-- with the lock in it.
-- KEYS: lock, incarnation (hash), and with a gate: the job's gate (hash)
-- ARGV: token, key ttl ms, and with a gate: its generation, the lock's name
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('TYPE', KEYS[2])['ok'] ~= 'hash' then
  return 0
end
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then
  return 0
end
local lock_inc = string.match(current, '^%S+ %d+ (%S+) %S+$')
if lock_inc ~= nil and lock_inc ~= redis.call('HGET', KEYS[2], 'id') then
  return 0
end
if ARGV[3] then
  -- A gate this program did not write (of another type, or without that generation) keeps
  -- nothing: lock_acquire.lua replaces it.
  if redis.call('TYPE', KEYS[3])['ok'] ~= 'hash'
    or redis.call('HGET', KEYS[3], 'generation') ~= ARGV[3]
    or redis.call('HEXISTS', KEYS[3], 'lock:' .. ARGV[4]) == 0 then
    return 0
  end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
