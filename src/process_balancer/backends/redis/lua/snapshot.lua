-- One consistent read of everything the assignment is computed from, and the pauses.
-- KEYS: members (zset), traits (hash), info (hash), version, assignment_version,
--       assignment (hash), counts (hash), unplaced, paused (hash), partitions
-- Returns {now ms, wrong, version, assignment_version, members with scores, traits, info,
-- counts, assignment, unplaced, paused, partitions}. A key holding another type than expected is read as
-- missing and listed in `wrong` as "<key> <type>", so the caller names it instead of failing
-- on a WRONGTYPE error. A missing version, assignment version, unplaced or partitions reads
-- as false.
local expected = {'zset', 'hash', 'hash', 'string', 'string', 'hash', 'hash', 'string', 'hash',
  'string'}
local readable = {}
local wrong = {}
for i, key in ipairs(KEYS) do
  local found = redis.call('TYPE', key)['ok']
  readable[i] = found == 'none' or found == expected[i]
  if not readable[i] then
    wrong[#wrong + 1] = key .. ' ' .. found
  end
end
local function get(i)
  if readable[i] then
    return redis.call('GET', KEYS[i])
  end
  return false
end
local function hgetall(i)
  if readable[i] then
    return redis.call('HGETALL', KEYS[i])
  end
  return {}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local members = {}
if readable[1] then
  members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
end
return {
  now,
  wrong,
  get(4),
  get(5),
  members,
  hgetall(2),
  hgetall(3),
  hgetall(7),
  hgetall(6),
  get(8),
  hgetall(9),
  get(10),
}
