-- Store an assignment only if the state version it was computed from is still current and
-- no assignment for that version was stored yet (compare-and-set: one assignment per version).
-- KEYS: version, assignment_version, assignment (hash), unplaced, partitions
-- ARGV: version, channel, unplaced json, partitions json ({job: [count, generation]}), then
--       identity, slots json pairs
-- Returns 1 stored, 0 not current (nothing written), or {-1, "<key> <type>"...} when a version
-- key holds another type than it must (nothing written). The assignment, unplaced and
-- partitions keys are replaced whatever they held.
local expected = {'string', 'string'}
local wrong = {}
for i = 1, 2 do
  local key = KEYS[i]
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= expected[i] then
    wrong[#wrong + 1] = key .. ' ' .. found
  end
end
if #wrong > 0 then
  return {-1, unpack(wrong)}
end
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then
  return 0
end
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[3])
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[4], ARGV[3])
redis.call('SET', KEYS[5], ARGV[4])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'assignment')
return 1
