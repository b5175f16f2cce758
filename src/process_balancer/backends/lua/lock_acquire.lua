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
-- {0} held by a live member, {3} the group has no incarnation yet (no heartbeat reached this
-- server since it lost the group's state), {4, ms} no lock is granted for that long after a
-- new incarnation, {-1, key, value} a key holds something that is not a process-balancer value.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace = tonumber(ARGV[4])
local inc = redis.call('HMGET', KEYS[4], 'id', 'grants_at')
if not inc[1] then
  return {3}
end
local grants_at = tonumber(inc[2] or '0') or 0
if now < grants_at + grace then
  return {4, grants_at + grace - now}
end
local current = redis.call('GET', KEYS[1])
local previous = false
if current then
  local lock_inc, holder = string.match(current, '^%S+ %d+ (%S+) (%S+)$')
  if holder == nil then
    -- written by an earlier version: token, fence, holder
    holder = string.match(current, '^%S+ %d+ (%S+)$')
    lock_inc = inc[1]
  end
  if holder == nil then
    return {-1, KEYS[1], current}
  end
  if holder ~= ARGV[2] and lock_inc == inc[1] then
    local deadline = redis.call('ZSCORE', KEYS[3], holder) or redis.call('ZSCORE', KEYS[5], holder)
    if deadline and tonumber(deadline) + grace > now then
      return {0}
    end
    previous = holder
  end
end
local raw_fence = redis.call('GET', KEYS[2])
local stored = tonumber(raw_fence or '0')
if stored == nil then
  return {-1, KEYS[2], raw_fence}
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
