package redis

// The limiter's Lua scripts. They mirror quota.Rules exactly (fits, the
// sliding minute, rollover, settle and release); storage/storagetest's
// limiter suite runs the same cases on both.
//
// Keys, both under one hash tag so a key's counters share a cluster slot:
//
//	KEYS[1] {prefix}{<key id>}:q  string: the key's counters (quota.State), a MessagePack array
//	KEYS[2] {prefix}{<key id>}:l  sorted set: the key's reservations, "id:tokens:cost" by expiry (Unix ms)
//
// The counters, in the array's order: lt lifetime tokens; ds dt dc, ws wt
// wc, ms mt mc the day, week and month windows (start in Unix seconds,
// tokens, cost micros); rt rc tokens and cost held by reservations; qm qc
// qp and tm tc tp the RPM and TPM windows (minute index, current,
// previous).
//
// Why this shape: every call reads and writes all the counters, and
// Redis spends most of a script's time on arguments and number
// formatting, not on the data. One MessagePack string (Redis's built-in
// cmsgpack, in C) costs a GET and a SET where a hash of 18 fields cost an
// HMGET, an HSET of 36 arguments and 18 string.format calls: the reserve
// script went from about 40 µs of Redis time to about 24 (INFO
// commandstats, on the machine of BENCHMARKS.md). A reservation's
// amounts travel in its member name, which the caller rebuilds from the
// quota.Reservation it holds, so one sorted set does the work of a hash
// and a sorted set. MessagePack keeps integers exact up to 2^53, like Lua
// 5.1's numbers.
//
// A finished reservation is not removed at once: its member is re-scored
// to minus (the time it finished + 1 ms), a mark that counts as no lease
// and that the purge (scores from 0 up) skips; the purge drops marks older
// than 2 minutes. The mark is what
// makes a script safe to run twice: go-redis sends a command again when
// its reply timed out or the connection broke after it was written, and
// the first run may well have happened. A settle or release that finds
// the mark changes nothing, and a reserve that finds its own member
// answers as it did. Without that, a retried settle would charge the usage
// twice, and a retried reserve would hold its amounts forever. Two minutes
// is far longer than go-redis's retries take, and instances' clocks must
// agree to well within it anyway (they share minute windows). A key keeps
// two minutes of finished reservations: about 7 KB of Redis memory for
// each request a second the key makes.
//
// The two keys always expire together (save refreshes both): counters
// that outlived their reservations would hold those reservations'
// amounts forever. Reservations expire on their own, by their scores (a
// crashed instance's are purged by the next call for the key).
//
// Time comes from the caller (ARGV), never from Redis TIME: instances
// agree on windows through their clocks, and tests drive a fake clock.
// Windows only move forward, so a lagging clock cannot undo a rollover.

const luaPrelude = `
local S, L = KEYS[1], KEYS[2]
local W = 60000
local DONE = 120000
local F = {'lt','ds','dt','dc','ws','wt','wc','ms','mt','mc','rt','rc','qm','qc','qp','tm','tc','tp'}
local function load()
  local v = redis.call('GET', S)
  if not v then return nil end
  local a = cmsgpack.unpack(v)
  local st = {}
  for i = 1, #F do st[F[i]] = tonumber(a[i]) or 0 end
  return st
end
local function save(st, ttl)
  local a = {}
  for i = 1, #F do a[i] = st[F[i]] end
  redis.call('SET', S, cmsgpack.pack(a), 'PX', ttl)
  redis.call('PEXPIRE', L, ttl)
end
local function amounts(m)
  local t, c = string.match(m, ':(%d+):(%d+)$')
  return tonumber(t) or 0, tonumber(c) or 0
end
local function purge(st, now)
  redis.call('ZREMRANGEBYSCORE', L, '(' .. string.format('%.0f', -(now - DONE + 1)), '(0')
  local ms = redis.call('ZRANGEBYSCORE', L, 0, now, 'LIMIT', 0, 256)
  if #ms == 0 then return end
  for i = 1, #ms do
    local t, c = amounts(ms[i])
    st.rt = st.rt - t
    st.rc = st.rc - c
  end
  redis.call('ZREM', L, unpack(ms))
  if st.rt < 0 then st.rt = 0 end
  if st.rc < 0 then st.rc = 0 end
end
local function roll(st, day, week, month, minute)
  if day > st.ds then st.ds = day; st.dt = 0; st.dc = 0 end
  if week > st.ws then st.ws = week; st.wt = 0; st.wc = 0 end
  if month > st.ms then st.ms = month; st.mt = 0; st.mc = 0 end
  if minute > st.qm then
    if minute == st.qm + 1 then st.qp = st.qc else st.qp = 0 end
    st.qc = 0
    st.qm = minute
  end
  if minute > st.tm then
    if minute == st.tm + 1 then st.tp = st.tc else st.tp = 0 end
    st.tc = 0
    st.tm = minute
  end
end
local function leases(now)
  return redis.call('ZCOUNT', L, '(' .. now, '+inf')
end
local function reply(code, st, n)
  return {code, st.lt, st.ds, st.dt, st.dc, st.ws, st.wt, st.wc, st.ms, st.mt, st.mc,
    st.rt, st.rc, st.qm, st.qc, st.qp, st.tm, st.tc, st.tp, n}
end
`

// luaReserve: ARGV now_ms day week month minute member expires_ms
// need_tokens need_cost need_rate token_limit monthly_tokens monthly_cost
// weekly_tokens weekly_cost daily_tokens daily_cost rpm tpm max_concurrent
// state_ttl_ms, where member is "id:need_tokens:need_cost". Returns {-1}
// when the counters are missing (seed, then call again), else reply(1
// admitted | 0 refused, state).
const luaReserve = luaPrelude + `
local st = load()
if not st then return {-1} end
if redis.call('ZSCORE', L, ARGV[6]) then
  return reply(1, st, leases(ARGV[1])) -- this reservation, sent again: already made
end
local now = tonumber(ARGV[1])
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
local n = leases(ARGV[1])
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
redis.call('ZADD', L, ARGV[7], ARGV[6])
save(st, ARGV[21])
return reply(1, st, n + 1)
`

// luaFinish settles or releases one or more reservations of a key, as
// if one after another, loading and saving the counters once. ARGV now_ms
// day week month minute state_ttl_ms, then per reservation twelve: mode
// ("s" settle, "r" release) member res_tokens res_cost res_rate res_day
// res_week res_month res_minute act_tokens act_cost act_rate. Returns 1,
// or 0 when the counters are missing (nothing to correct: the next seed
// reads this usage from the store).
//
// Every reservation is marked finished first (see the marks above), then
// expired reservations are purged: a reservation that expired before its
// settle arrived is then taken back by its settle, not by the purge, which
// subtracts the same amounts. For settles that gives the result of one
// call after another. A release in
// a batch would not (one call after another, an expired reservation is
// purged first and its release then gives nothing back to the RPM and TPM
// windows), so releases always come alone (Release); only SettleMany
// sends several, and only settles.
const luaFinish = luaPrelude + `
local now = tonumber(ARGV[1])
local live, again = {}, {}
for o = 7, #ARGV, 12 do
  local sc = redis.call('ZSCORE', L, ARGV[o+1])
  if sc and tonumber(sc) < 0 then
    again[o] = true -- finished already: this is the same call sent again
  else
    live[o] = sc and 1 or 0
    redis.call('ZADD', L, -(now + 1), ARGV[o+1])
  end
end
local st = load()
if not st then
  redis.call('PEXPIRE', L, ARGV[6]) -- the marks may have made a new set
  return 0
end
purge(st, now)
roll(st, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
local rm
local function adjust(p, delta, late)
  local m = st[p..'m']
  if rm >= m then st[p..'c'] = math.max(0, st[p..'c'] + delta)
  elseif rm == m - 1 then st[p..'p'] = math.max(0, st[p..'p'] + delta)
  elseif late and delta > 0 then st[p..'c'] = st[p..'c'] + delta end
end
for o = 7, #ARGV, 12 do
  if not again[o] then
    local rt, rc, rr = tonumber(ARGV[o+2]), tonumber(ARGV[o+3]), tonumber(ARGV[o+4])
    if live[o] == 1 then
      st.rt = math.max(0, st.rt - rt)
      st.rc = math.max(0, st.rc - rc)
    end
    rm = tonumber(ARGV[o+8])
    if ARGV[o] == 's' then
      local at, ac = tonumber(ARGV[o+9]), tonumber(ARGV[o+10])
      st.lt = st.lt + at
      if tonumber(ARGV[o+5]) >= st.ds then st.dt = st.dt + at; st.dc = st.dc + ac end
      if tonumber(ARGV[o+6]) >= st.ws then st.wt = st.wt + at; st.wc = st.wc + ac end
      if tonumber(ARGV[o+7]) >= st.ms then st.mt = st.mt + at; st.mc = st.mc + ac end
      adjust('t', tonumber(ARGV[o+11]) - rr, true)
    elseif live[o] == 1 then
      adjust('q', -1, false)
      adjust('t', -rr, false)
    end
  end
end
save(st, ARGV[6])
return 1
`

// luaRenew: ARGV now_ms member expires_ms state_ttl_ms. Returns 1, or 0
// when the reservation expired or is gone.
const luaRenew = `
local L = KEYS[2]
local sc = redis.call('ZSCORE', L, ARGV[2])
if not sc or tonumber(sc) <= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', L, 'XX', ARGV[3], ARGV[2])
redis.call('PEXPIRE', L, ARGV[4])
return 1
`

// luaStanding: ARGV now_ms day week month minute state_ttl_ms. Returns
// {-1} when the counters are missing, else reply(1, state).
const luaStanding = luaPrelude + `
local st = load()
if not st then return {-1} end
local now = tonumber(ARGV[1])
purge(st, now)
roll(st, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
save(st, ARGV[6])
return reply(1, st, leases(ARGV[1]))
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
local ms = redis.call('ZRANGEBYSCORE', L, 0, '+inf')
for i = 1, #ms do
  local t, c = amounts(ms[i])
  st.rt = st.rt + t
  st.rc = st.rc + c
end
save(st, ARGV[12])
return 1
`
