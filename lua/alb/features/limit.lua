-- config.limit (docs/policy.md "Rule config (v1)"): request rates and concurrent requests per rule and client
-- address, counted in the shared dict `alb_limit` (all workers), with ingress-nginx's semantics.
--
-- Rates: GCRA, the "virtual scheduling" form of nginx's leaky bucket (limit_req ... burst=B nodelay). Per key
-- the dict holds the theoretical arrival time TAT; a request is let through when TAT - now <= burst * T
-- (T = 1 / rate), and TAT moves on by T. The hot path is one atomic `incr` (plus one `incr` back when refused);
-- only a key that went idle is reset with `set` (two workers resetting the same key at the same instant may let
-- one extra request through). Keys have no TTL: the dict evicts the least recently used ones when full.
-- Connections: a counter per key, +1 when the request is let through, -1 in the log phase (which runs once for
-- every request, whatever answered it); the key of a taken slot travels in $alb_limit_conn because ngx.ctx does
-- not survive ngx.exec / error_page. Counters live at most CONN_TTL seconds, so a slot lost with a crashed
-- worker heals.
local u = require("alb.features.util")
local access = require("alb.features.access")

local ngx = ngx
local ngx_var = ngx.var
local ngx_now = ngx.now
local log = ngx.log
local ERR = ngx.ERR
local tostring = tostring
local type = type

local _M = {}

_M.DICT = "alb_limit"
local dict = ngx.shared and ngx.shared[_M.DICT]

local CONN_TTL = 3600
-- times are kept relative to a fixed epoch so that the doubles in the dict stay small (precise)
local EPOCH = 1700000000
local EPS = 1e-6

local contains = access.contains

-- `per_second` requests per second with a burst of `burst` requests: T and the tolerance burst * T
local function rate(per_second, burst)
    local t = 1 / per_second
    return { t = t, tau = burst * t + EPS }
end

function _M.compile(l, path)
    if not u.is_object(l) then
        u.fail(path, "must be an object")
    end
    local max = 4294967295 -- u32, as in src/policy/config.rs
    local rps = u.opt_uint(l.rps, path .. ".rps", max)
    local rpm = u.opt_uint(l.rpm, path .. ".rpm", max)
    local mult = u.opt_uint(l.burst_multiplier, path .. ".burst_multiplier", max) or 5
    local conn = u.opt_uint(l.connections, path .. ".connections", max)
    local whitelist = access.compile_set(l.whitelist, path .. ".whitelist")
    local status = u.opt_uint(l.status, path .. ".status", 599) or 503
    if status < 400 then
        u.fail(path .. ".status", "must be in 400..599")
    end
    if rps == 0 then rps = nil end
    if rpm == 0 then rpm = nil end
    if conn == 0 then conn = nil end
    if not (rps or rpm or conn) then
        return nil
    end
    return {
        rps = rps and rate(rps, rps * mult),
        rpm = rpm and rate(rpm / 60, rpm * mult),
        conn = conn,
        whitelist = whitelist,
        status = status,
        prefix = nil, -- "<port>|<namespace>/<rule name>|", set by the first request (the table is per rule)
    }
end

local function key_prefix(l)
    local ctx = ngx.ctx
    local rule = ctx.alb_rule
    local src = rule and rule.source
    local ns = type(src) == "table" and type(src.namespace) == "string" and src.namespace or ""
    local p = tostring(ctx.alb_port or ngx_var.server_port) .. "|" .. ns .. "/" .. tostring(rule and rule.name) .. "|"
    l.prefix = p
    return p
end

-- one request against the rate `r` of key `k`: true when let through
local function take(k, r, now)
    local t = r.t
    local tat, err = dict:incr(k, t, now)
    if not tat then
        log(ERR, "alb: limit: ", err)
        return true
    end
    local prev = tat - t
    if prev < now then
        -- idle key: the bucket is empty, start again from now
        dict:set(k, now + t)
        return true
    end
    if prev - now > r.tau then
        dict:incr(k, -t)
        return false
    end
    return true
end

local outstanding = 0 -- slots taken by this worker's requests and not yet released

local function refuse(l, what)
    return u.alb_error(l.status, "LimitExceeded : " .. what)
end

--- rewrite phase, right after the match (after access): answers `status` (and does not return) when over a limit
function _M.run(l)
    if not dict then
        return
    end
    local bin = ngx_var.binary_remote_addr or ""
    local wl = l.whitelist
    if wl and contains(wl, bin) then
        return
    end
    local prefix = l.prefix or key_prefix(l)
    local now = ngx_now() - EPOCH
    local rs, rm = l.rps, l.rpm
    if rs and not take(prefix .. "s" .. bin, rs, now) then
        return refuse(l, "rps")
    end
    if rm and not take(prefix .. "m" .. bin, rm, now) then
        if rs then
            dict:incr(prefix .. "s" .. bin, -rs.t) -- not counted against the other rate
        end
        return refuse(l, "rpm")
    end
    local conn = l.conn
    if conn then
        local k = prefix .. "c" .. bin
        local n, err = dict:incr(k, 1, 0, CONN_TTL)
        if not n then
            log(ERR, "alb: limit: ", err)
            return
        end
        if n > conn then
            dict:incr(k, -1)
            return refuse(l, "connections")
        end
        ngx_var.alb_limit_conn = k
        outstanding = outstanding + 1
    end
end

--- log phase of every request on the http listeners: releases the request's connection slot, if it took one
function _M.log()
    if outstanding == 0 then
        return
    end
    local k = ngx_var.alb_limit_conn
    if k and k ~= "" then
        outstanding = outstanding - 1
        local n = dict:incr(k, -1)
        if n and n < 0 then
            -- the counter expired (CONN_TTL) while this request ran: do not let it go below zero
            dict:incr(k, -n)
        end
    end
end

return _M
