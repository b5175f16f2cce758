-- Take a worker lock. The lock's value names its holder, so a lock held by a member whose
-- membership has expired (a crashed process) can be taken over at once instead of waiting
-- out its TTL. Every success increments the lock's fencing token.
-- KEYS: lock, fence counter, members (zset identity -> deadline ms)
-- ARGV: token, holder identity, ttl ms
-- Returns {1, fence} taken, {2, fence, previous holder} taken over from an expired holder,
-- {0} held by a live member, {-1, value} the lock key holds something unreadable.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('GET', KEYS[1])
local previous = false
if current then
  local holder = string.match(current, '^%S+ %d+ (.+)$')
  if holder == nil then
    return {-1, current}
  end
  local deadline = redis.call('ZSCORE', KEYS[3], holder)
  if deadline and tonumber(deadline) > now then
    return {0}
  end
  previous = holder
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. fence .. ' ' .. ARGV[2], 'PX', tonumber(ARGV[3]))
if previous then
  return {2, fence, previous}
end
return {1, fence}
