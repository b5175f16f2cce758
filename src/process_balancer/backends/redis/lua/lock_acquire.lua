-- Take a worker lock. The lock's value names its holder, so a lock held by a member whose
-- membership has expired (a crashed process) can be taken over takeover_grace after its
-- deadline instead of waiting out the lock's TTL. A process may take over a lock that names
-- itself (it runs one worker per slot; such a lock is left by a release or an acquire whose
-- answer was lost). Fencing tokens strictly increase per slot, also across a backend that
-- restarts empty or goes back to an older state: each is at least the server's clock in
-- microseconds.
-- KEYS: lock, fence counter, members (zset identity -> deadline ms), incarnation (hash),
--       departed (zset identity -> deadline ms)
-- ARGV: token, holder identity, key ttl ms (the lock's ttl plus the grace), grace ms
-- Returns {1, fence} taken, {2, fence, previous holder} taken over from an expired holder,
-- {0} held by a live member, {3} the group has no incarnation of this server yet (no heartbeat
-- reached it since it lost the group's state, restarted or took over), {4, ms} no lock is granted for that long after a
-- new incarnation, {5, key, value, ms} the lock key holds something this program never wrote
-- (the slot is free when it expires, in ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace = tonumber(ARGV[4])
local lock_type = redis.call('TYPE', KEYS[1])['ok']
local current = false
if lock_type == 'string' then
  current = redis.call('GET', KEYS[1])
end
local holder = nil
local lock_inc = nil
local legacy = false
if current then
  lock_inc, holder = string.match(current, '^%S+ %d+ (%S+) (%S+)$')
  if holder == nil then
    -- written by an earlier version: token, fence, holder
    holder = string.match(current, '^%S+ %d+ (%S+)$')
    legacy = true
  end
end
if lock_type ~= 'none' and holder == nil then
  -- Not a lock this program wrote (a bad restore, a foreign tool). Whoever held the slot
  -- cannot renew through it and stops within the lock's ttl: the slot is free once the key
  -- expires, at the latest the key ttl after it was first seen here (checked first, so that
  -- this wait runs alongside the one for a new incarnation below).
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 or left > tonumber(ARGV[3]) then
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
    left = tonumber(ARGV[3])
  end
  return {5, KEYS[1], current or ('a ' .. lock_type), left}
end
-- Group keys of another type are discarded by the next heartbeat; until then nothing is
-- granted.
local types = {'zset', 'hash', 'zset'}
for i = 3, 5 do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= types[i - 2] then
    return {3}
  end
end
local inc = redis.call('HMGET', KEYS[4], 'id', 'grants_at', 'server')
if not inc[1] then
  return {3}
end
-- An incarnation begun by another server: this one restarted (from an older snapshot) or was
-- promoted by a failover since, so the memberships and locks it holds may be older than what
-- the processes run by. Nothing is granted before a heartbeat has begun a new incarnation.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or '?'
if inc[3] ~= run_id then
  return {3}
end
local grants_at = tonumber(inc[2] or '0') or 0
if now < grants_at + grace then
  return {4, grants_at + grace - now}
end
if legacy then
  lock_inc = inc[1]
end
local previous = false
if current then
  if holder ~= ARGV[2] and lock_inc == inc[1] then
    local deadline = redis.call('ZSCORE', KEYS[3], holder) or redis.call('ZSCORE', KEYS[5], holder)
    if deadline and tonumber(deadline) + grace > now then
      return {0}
    end
    previous = holder
  end
end
-- A counter that is not a number (a bad restore, a foreign tool) counts as 0: the server
-- clock still puts the token past every earlier one, as after a restart that lost it.
-- Only a whole number a double holds exactly (below 2^53) is continued.
local stored = 0
if redis.call('TYPE', KEYS[2])['ok'] == 'string' then
  local raw = redis.call('GET', KEYS[2])
  if string.match(raw, '^%d+$') and #raw <= 16 and tonumber(raw) < 9007199254740992 then
    stored = tonumber(raw)
  end
end
local fence = math.max(stored + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
local fence_text = string.format('%.0f', fence)
redis.call('SET', KEYS[2], fence_text)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence_text .. ' ' .. inc[1] .. ' ' .. ARGV[2],
  'PX', tonumber(ARGV[3]))
if previous then
  return {2, fence_text, previous}
end
return {1, fence_text}
