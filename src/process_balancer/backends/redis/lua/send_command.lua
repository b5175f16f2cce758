-- Queue a command for a live member. KEYS: members, commands list; ARGV: identity, json, ttl ms
-- Returns 1 queued, 0 not a live member, or {-1, "<key> <type>"...} when a key holds another
-- type than it must (nothing queued).
local expected = {'zset', 'list'}
local wrong = {}
for i, key in ipairs(KEYS) do
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= expected[i] then
    wrong[#wrong + 1] = key .. ' ' .. found
  end
end
if #wrong > 0 then
  return {-1, unpack(wrong)}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) <= now then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
