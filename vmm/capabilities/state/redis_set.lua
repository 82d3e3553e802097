-- set. ARGV: key, value, ttl ms (0: none), size, max keys, max bytes.
local now, key, ttl, size = now_ms(), ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
if not room(now, key, size, tonumber(ARGV[5]), tonumber(ARGV[6])) then
  return 'quota-exceeded'
end
local expiry = NO_EXPIRY
if ttl > 0 then expiry = now + ttl end
redis.call('SET', value_key, ARGV[2])
keep_until(expiry)
account(key, size, expiry)
return 'ok'
