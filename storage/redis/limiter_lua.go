package redis

// The limiter's Lua scripts. They mirror quota.Rules exactly (fits, the
// sliding minute, rollover, settle and release); storage/storagetest's
// limiter suite runs the same cases on both.
//
// Keys, all under one hash tag so a key's counters share a cluster slot:
//
//	KEYS[1] {prefix}{<key id>}:s  hash: the key's counters (quota.State)
//	KEYS[2] {prefix}{<key id>}:r  hash: reservation id -> "tokens:cost"
//	KEYS[3] {prefix}{<key id>}:e  sorted set: reservation id by expiry (Unix ms)
//
// Fields of :s: lt lifetime tokens; ds dt dc, ws wt wc, ms mt mc the day,
// week and month windows (start in Unix seconds, tokens, cost micros); rt
// rc tokens and cost held by reservations; qm qc qp and tm tc tp the RPM
// and TPM windows (minute index, current, previous).
//
// The three keys always expire together (save refreshes all of them):
// counters that outlived their reservations would hold those reservations'
// amounts forever. Reservations expire on their own, by the scores of :e
// (a crashed instance's are purged by the next call for the key).
//
// Time comes from the caller (ARGV), never from Redis TIME: instances
// agree on windows through their clocks, and tests drive a fake clock.
// Windows only move forward, so a lagging clock cannot undo a rollover.
// Numbers are written with %.0f: Lua 5.1's tostring would print large
// integers in exponent form and lose digits.

const luaPrelude = `
local S, R, E = KEYS[1], KEYS[2], KEYS[3]
local W = 60000
local F = {'lt','ds','dt','dc','ws','wt','wc','ms','mt','mc','rt','rc','qm','qc','qp','tm','tc','tp'}
local function fmt(x) return string.format('%.0f', x) end
local function load()
  local v = redis.call('HMGET', S, unpack(F))
  local st = {}
  for i = 1, #F do st[F[i]] = tonumber(v[i]) or 0 end
  return st
end
local function save(st, ttl)
  local a = {}
  for i = 1, #F do a[#a+1] = F[i]; a[#a+1] = fmt(st[F[i]]) end
  redis.call('HSET', S, unpack(a))
  redis.call('PEXPIRE', S, ttl)
  redis.call('PEXPIRE', R, ttl)
  redis.call('PEXPIRE', E, ttl)
end
local function amounts(v)
  local t, c = string.match(v or '', '^(%d+):(%d+)$')
  return tonumber(t) or 0, tonumber(c) or 0
end
local function purge(st, now)
  local ids = redis.call('ZRANGEBYSCORE', E, '-inf', now, 'LIMIT', 0, 256)
  for i = 1, #ids do
    local t, c = amounts(redis.call('HGET', R, ids[i]))
    st.rt = st.rt - t
    st.rc = st.rc - c
    redis.call('HDEL', R, ids[i])
    redis.call('ZREM', E, ids[i])
  end
  if st.rt < 0 then st.rt = 0 end
  if st.rc < 0 then st.rc = 0 end
end
local function roll(st, day, week, month, minute)
  if day > st.ds then st.ds = day; st.dt = 0; st.dc = 0 end
  if week > st.ws then st.ws = week; st.wt = 0; st.wc = 0 end
  if month > st.ms then st.ms = month; st.mt = 0; st.mc = 0 end
  for _, p in ipairs({'q', 't'}) do
    local m = st[p..'m']
    if minute > m then
      if minute == m + 1 then st[p..'p'] = st[p..'c'] else st[p..'p'] = 0 end
      st[p..'c'] = 0
      st[p..'m'] = minute
    end
  end
end
local function leases(now)
  return redis.call('ZCOUNT', E, '(' .. fmt(now), '+inf')
end
local function reply(code, st, n)
  return {code, st.lt, st.ds, st.dt, st.dc, st.ws, st.wt, st.wc, st.ms, st.mt, st.mc,
    st.rt, st.rc, st.qm, st.qc, st.qp, st.tm, st.tc, st.tp, n}
end
`

// luaReserve: ARGV now_ms day week month minute id expires_ms need_tokens
// need_cost need_rate token_limit monthly_tokens monthly_cost
// weekly_tokens weekly_cost daily_tokens daily_cost rpm tpm max_concurrent
// state_ttl_ms. Returns {-1} when the counters are missing
// (seed, then call again), else reply(1 admitted | 0 refused, state).
const luaReserve = luaPrelude + `
if redis.call('EXISTS', S) == 0 then return {-1} end
local now = tonumber(ARGV[1])
local st = load()
purge(st, now)
roll(st, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
local nt, nc, nr = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local function fits(limit, used, reserved, need)
  limit = tonumber(limit)
  if limit <= 0 then return true end
  local rem = limit - used - reserved
  return rem > 0 and need <= rem
end
local function count(p)
  local el = now - st[p..'m'] * W
  if el < 0 then el = 0 elseif el > W - 1 then el = W - 1 end
  return math.floor(st[p..'p'] * (W - el) / W) + st[p..'c']
end
local n = leases(now)
local ok = fits(ARGV[11], st.lt, st.rt, nt)
  and fits(ARGV[12], st.mt, st.rt, nt) and fits(ARGV[13], st.mc, st.rc, nc)
  and fits(ARGV[14], st.wt, st.rt, nt) and fits(ARGV[15], st.wc, st.rc, nc)
  and fits(ARGV[16], st.dt, st.rt, nt) and fits(ARGV[17], st.dc, st.rc, nc)
local rpm, tpm, maxc = tonumber(ARGV[18]), tonumber(ARGV[19]), tonumber(ARGV[20])
if ok and maxc > 0 and n >= maxc then ok = false end
if ok and rpm > 0 and count('q') + 1 > rpm then ok = false end
if ok and tpm > 0 then
  local c = count('t')
  if c > 0 and c + nr > tpm then ok = false end
end
if not ok then
  save(st, ARGV[21])
  return reply(0, st, n)
end
st.rt = st.rt + nt
st.rc = st.rc + nc
st.qc = st.qc + 1
st.tc = st.tc + nr
redis.call('HSET', R, ARGV[6], fmt(nt) .. ':' .. fmt(nc))
redis.call('ZADD', E, ARGV[7], ARGV[6])
save(st, ARGV[21])
return reply(1, st, n + 1)
`

// luaFinish settles or releases. ARGV now_ms day week month minute mode
// ("s" settle, "r" release) id res_tokens res_cost res_rate res_day
// res_week res_month res_minute act_tokens act_cost act_rate state_ttl_ms.
// Returns 1, or 0 when the counters are missing (nothing to correct: the
// next seed reads this usage from the store).
const luaFinish = luaPrelude + `
local live = redis.call('HDEL', R, ARGV[7])
redis.call('ZREM', E, ARGV[7])
if redis.call('EXISTS', S) == 0 then return 0 end
local now = tonumber(ARGV[1])
local st = load()
purge(st, now)
roll(st, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
local rt, rc, rr = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
if live == 1 then
  st.rt = math.max(0, st.rt - rt)
  st.rc = math.max(0, st.rc - rc)
end
local rm = tonumber(ARGV[14])
local function adjust(p, delta, late)
  local m = st[p..'m']
  if rm >= m then st[p..'c'] = math.max(0, st[p..'c'] + delta)
  elseif rm == m - 1 then st[p..'p'] = math.max(0, st[p..'p'] + delta)
  elseif late and delta > 0 then st[p..'c'] = st[p..'c'] + delta end
end
if ARGV[6] == 's' then
  local at, ac = tonumber(ARGV[15]), tonumber(ARGV[16])
  st.lt = st.lt + at
  if tonumber(ARGV[11]) >= st.ds then st.dt = st.dt + at; st.dc = st.dc + ac end
  if tonumber(ARGV[12]) >= st.ws then st.wt = st.wt + at; st.wc = st.wc + ac end
  if tonumber(ARGV[13]) >= st.ms then st.mt = st.mt + at; st.mc = st.mc + ac end
  adjust('t', tonumber(ARGV[17]) - rr, true)
elseif live == 1 then
  adjust('q', -1, false)
  adjust('t', -rr, false)
end
save(st, ARGV[18])
return 1
`

// luaRenew: ARGV now_ms id expires_ms state_ttl_ms. Returns 1, or 0 when
// the reservation expired or is gone.
const luaRenew = `
local E, R = KEYS[3], KEYS[2]
local sc = redis.call('ZSCORE', E, ARGV[2])
if not sc or tonumber(sc) <= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', E, 'XX', ARGV[3], ARGV[2])
redis.call('PEXPIRE', R, ARGV[4])
redis.call('PEXPIRE', E, ARGV[4])
return 1
`

// luaStanding: ARGV now_ms day week month minute state_ttl_ms. Returns
// {-1} when the counters are missing, else reply(1, state).
const luaStanding = luaPrelude + `
if redis.call('EXISTS', S) == 0 then return {-1} end
local now = tonumber(ARGV[1])
local st = load()
purge(st, now)
roll(st, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
save(st, ARGV[6])
return reply(1, st, leases(now))
`

// luaSeed creates the counters unless they exist (another instance may
// have seeded them meanwhile: first one wins). ARGV lifetime day_start
// day_tokens day_cost week_start week_tokens week_cost month_start
// month_tokens month_cost minute state_ttl_ms. Reservations that survived
// the loss of the counters are held again.
const luaSeed = luaPrelude + `
if redis.call('EXISTS', S) == 1 then return 0 end
local st = {lt = tonumber(ARGV[1]),
  ds = tonumber(ARGV[2]), dt = tonumber(ARGV[3]), dc = tonumber(ARGV[4]),
  ws = tonumber(ARGV[5]), wt = tonumber(ARGV[6]), wc = tonumber(ARGV[7]),
  ms = tonumber(ARGV[8]), mt = tonumber(ARGV[9]), mc = tonumber(ARGV[10]),
  rt = 0, rc = 0, qm = tonumber(ARGV[11]), qc = 0, qp = 0, tm = tonumber(ARGV[11]), tc = 0, tp = 0}
local all = redis.call('HGETALL', R)
for i = 2, #all, 2 do
  local t, c = amounts(all[i])
  st.rt = st.rt + t
  st.rc = st.rc + c
end
save(st, ARGV[12])
return 1
`
