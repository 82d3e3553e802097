-- increment. ARGV: key, delta, ttl ms (for a new key), the key's bytes, max keys, max bytes.
-- Returns {status, value}. INCRBY does the 64-bit arithmetic (Lua numbers are doubles); what
-- fails after it is undone before the script returns, so no one sees it.
local now, key, ttl, key_bytes = now_ms(), ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local old = redis.call('GET', value_key)
local expiry = NO_EXPIRY
if old then
  if old ~= '0' and not string.match(old, '^%-?[1-9]%d*$') then
    return {'not-a-number', ''}
  end
  expiry = tonumber(redis.call('ZSCORE', expiry_set, key) or NO_EXPIRY)
else
  if ttl > 0 then expiry = now + ttl end
  redis.call('SET', value_key, '0')
end

local function undo()
  if old then redis.call('SET', value_key, old) else redis.call('DEL', value_key) end
  keep_until(expiry)
end

local sum = redis.pcall('INCRBY', value_key, ARGV[2])
if type(sum) == 'table' and sum.err then
  if not string.find(sum.err, 'overflow') then
    undo()
    return {'not-a-number', ''}
  end
  if string.sub(ARGV[2], 1, 1) == '-' then
    redis.call('SET', value_key, '-9223372036854775808')
  else
    redis.call('SET', value_key, '9223372036854775807')
  end
end
local value = redis.call('GET', value_key)
local size = key_bytes + string.len(value)
if not room(now, key, size, tonumber(ARGV[5]), tonumber(ARGV[6])) then
  undo()
  return {'quota-exceeded', ''}
end
keep_until(expiry)
account(key, size, expiry)
return {'ok', value}
