-- Prometheus metrics of the HTTP listeners (dataplane.md §4.16): counted in the log phase into the shared dict
-- `alb_metrics`, rendered as Prometheus text 0.0.4 by the metrics server (`/metrics`, `/clear`).
--
-- A shared-dict operation costs ~4 ns per key byte (crc32 + compare: 0.05 us at 10 bytes, 0.9 us at 180), so
-- samples are not keyed by their label text. A worker registers each series once under a short id
-- `<worker pid>.<n>` and then only touches short keys. Dict layout:
--   #gen                    clear generation: a worker whose caches are older registers its series again
--   #<id>                   series text `<name>{<labels>}` (escaped, as exposed)
--   <id>                    counter value
--   <id>:<i> / <id>:s       histogram bucket i (NOT cumulative; i = 1..#BOUNDS, #BOUNDS+1 = +Inf) / sum
-- A request reads what it counts through the cheapest API for each (status, method and request time as values
-- of the request, four short variables; no string is split) and only adds to a per-worker Lua table (~8 dict
-- incr per request would cost ~2 us, most of the metrics cost); a timer (FLUSH_INTERVAL) adds the table to the
-- dict with incr-with-init, so a scrape lags by at most that interval. A scrape adds up the ids that carry the
-- same text (two workers register the same series independently) and makes buckets cumulative; `_count` is the
-- sum of the buckets, so an observation is two additions and `_count` always equals `_bucket{le="+Inf"}`.
--
-- The request path never builds a label string twice: every matched rule object of the compiled router caches
-- its series (`rule.metrics`; a rule that a new policy keeps, same key on the same port, keeps them), unmatched
-- requests use one cache per port. The gauges (`nginx_http_connections`, `metrics_cache_size`) are computed at
-- scrape time.
local init = require("alb.init")

local ngx = ngx
local ngx_var = ngx.var
local type = type
local tostring = tostring
local tonumber = tonumber
local pairs = pairs
local next = next
local find = string.find
local gsub = string.gsub
local gmatch = string.gmatch
local sub = string.sub
local byte = string.byte
local sort = table.sort
local floor = math.floor
local concat = table.concat
local now = ngx.now
local log = ngx.log
local ERR, WARN, NOTICE = ngx.ERR, ngx.WARN, ngx.NOTICE

local _M = {
    DICT = "alb_metrics",
    -- set by init() in the master (inherited by the workers) when nginx.conf has the metrics server
    enabled = false,
    -- false only when env METRICS_AUTH is exactly "false" (as the original)
    auth = true,
    -- cached label combinations per rule / per port before we stop caching (the samples are still counted)
    CACHE_LIMIT = 256,
    -- seconds between two flushes of a worker's counts to the dict
    FLUSH_INTERVAL = 0.5,
}

local BOUNDS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local NB = #BOUNDS + 1
local LE = {}
for i = 1, #BOUNDS do
    LE[i] = tostring(BOUNDS[i])
end
LE[NB] = "+Inf"

local M_CONN = "nginx_http_connections"
local M_MISMATCH = "nginx_http_mismatch_rule_requests"
local M_STATUS = "nginx_http_status"
local M_REQ_SIZE = "nginx_http_request_size_bytes"
local M_RESP_SIZE = "nginx_http_response_size_bytes"
local M_DURATION = "nginx_http_request_duration_seconds"
local M_UP_STATUS = "nginx_http_upstream_requests_status"
local M_UP_DURATION = "nginx_http_upstream_request_duration_seconds"
local M_ALB_ERROR = "alb_error"
local M_CACHE = "metrics_cache_size"

-- exposition order, type and help of every family
local FAMILIES = {
    { M_CONN, "gauge", "Number of HTTP connections by state" },
    { M_MISMATCH, "counter", "Number of requests that matched no rule" },
    { M_STATUS, "counter", "Number of HTTP responses by rule and status" },
    { M_REQ_SIZE, "counter", "Bytes received in HTTP requests" },
    { M_RESP_SIZE, "counter", "Bytes sent in HTTP responses" },
    { M_DURATION, "histogram", "HTTP request duration in seconds" },
    { M_UP_STATUS, "counter", "Number of HTTP responses by rule, upstream and status" },
    { M_UP_DURATION, "histogram", "Upstream response time in seconds" },
    { M_ALB_ERROR, "counter", "Number of errors answered by the ALB itself" },
    { M_CACHE, "gauge", "Free bytes of the metrics shared dict" },
}

local shm -- ngx.shared.alb_metrics, resolved in init (master)
local HASH = byte("#")

--- init{enabled=true}: init_by_lua (master), only when nginx.conf declares the dict and the metrics server.
function _M.init(opts)
    opts = opts or {}
    _M.enabled = opts.enabled and true or false
    _M.auth = os.getenv("METRICS_AUTH") ~= "false"
    shm = ngx.shared[_M.DICT]
    if _M.enabled and not shm then
        error("alb: metrics enabled but lua_shared_dict " .. _M.DICT .. " is missing")
    end
end

-- label values per the text format: backslash, double quote and newline are escaped
local ESC = { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }
local function esc(s)
    if find(s, '[\\"\n]') then
        return (gsub(s, '[\\"\n]', ESC))
    end
    return s
end
_M.escape = esc

local function str(v)
    local t = type(v)
    if t == "string" then
        return v
    elseif t == "number" then
        return tostring(v)
    end
    return "" -- nil, cjson.null, tables
end

local GEN = "#gen"
local id_prefix -- "<worker pid>.", set on first use in the worker
local id_seq = 0

--- registers a series text, returns its (short) id
local function register(text)
    if not id_prefix then
        id_prefix = tostring(ngx.worker.pid()) .. "."
    end
    id_seq = id_seq + 1
    local id = id_prefix .. id_seq
    local ok, err = shm:set("#" .. id, text)
    if not ok then
        log(ERR, "alb: metrics dict ", _M.DICT, ": cannot register a series: ", err)
    end
    return id
end

-- keys of one histogram series: [1..NB] buckets, .s sum
local function hist_keys(name, labels)
    local id = register(name .. "{" .. labels .. "}")
    local t = {}
    for i = 1, NB do
        t[i] = id .. ":" .. i
    end
    t.s = id .. ":s"
    return t
end

local cur_gen = 0 -- the #gen the caches below were built under

--- label cache of a rule (or of "no rule" on a port)
local function new_cache(port, rule_name, source)
    local st, sns, sn = "", "", ""
    if type(source) == "table" then
        st, sns, sn = str(source.type), str(source.namespace), str(source.name)
    end
    local base = 'port="' .. esc(port) .. '",rule="' .. esc(rule_name) .. '"'
    local src = ',source_type="' .. esc(st) .. '",source_namespace="' .. esc(sns) .. '",source_name="' .. esc(sn)
        .. '"'
    return {
        gen = cur_gen,
        port = port,
        base = base,
        src = src,
        duration = nil, -- histogram keys, on first use
        status = {}, -- status -> method -> {status id, request size id, response size id}
        ups = {}, -- upstream_addr -> {escaped addr, duration keys, status -> method -> id}
        n = 0, -- cached combinations
        alb_error = nil,
        mismatch = {}, -- method -> id (no-rule cache only)
    }
end

local nomatch = {} -- port -> cache (bounded by the listening ports)

local function rule_cache(rule, port)
    local c = new_cache(port, str(rule.name), rule.source)
    rule.metrics = c
    return c
end

-- a cache holds at most CACHE_LIMIT combinations (method is client-controlled): beyond, it starts over
local function room(c)
    if c.n >= _M.CACHE_LIMIT then
        c.status, c.ups, c.mismatch, c.n = {}, {}, {}, 0
    end
    c.n = c.n + 1
end

local function status_keys(c, status, method)
    local bys = c.status[status]
    local e = bys and bys[method]
    if e then
        return e
    end
    local l = "{" .. c.base .. ',status="' .. status .. '",method="' .. esc(method) .. '"' .. c.src .. "}"
    e = { register(M_STATUS .. l), register(M_REQ_SIZE .. l), register(M_RESP_SIZE .. l) }
    room(c)
    bys = c.status[status]
    if not bys then
        bys = {}
        c.status[status] = bys
    end
    bys[method] = e
    return e
end

local function upstream_entry(c, addr)
    local u = c.ups[addr]
    if u then
        return u
    end
    local a = esc(addr)
    u = {
        addr = a,
        duration = hist_keys(M_UP_DURATION, c.base .. ',upstream_ip="' .. a .. '"' .. c.src),
        status = {},
    }
    room(c)
    c.ups[addr] = u
    return u
end

local function upstream_status_key(c, u, status, method)
    local bys = u.status[status]
    local k = bys and bys[method]
    if k then
        return k
    end
    k = register(M_UP_STATUS .. "{" .. c.base .. ',upstream_ip="' .. u.addr .. '",status="' .. status
        .. '",method="' .. esc(method) .. '"' .. c.src .. "}")
    room(c)
    bys = u.status[status]
    if not bys then
        bys = {}
        u.status[status] = bys
    end
    bys[method] = k
    return k
end

local function bucket(v)
    for i = 1, NB - 1 do
        if v <= BOUNDS[i] then
            return i
        end
    end
    return NB
end

local buf = {} -- key -> amount not yet added to the dict (this worker)

local function incr(key, v)
    buf[key] = (buf[key] or 0) + v
end

local last_err_log = 0

--- true when the clear generation moved (every cache is stale): checked per request (log) and per flush
local function check_gen()
    local g = shm:get(GEN) or 0
    if g == cur_gen then
        return false
    end
    cur_gen = g
    nomatch = {}
    return true
end

--- adds this worker's counts to the dict (timer, and the scrape of this worker); counts made before a
--- /clear are dropped (their series are gone)
local function flush()
    local b = buf
    if next(b) == nil then
        check_gen()
        return
    end
    buf = {}
    if check_gen() then
        return -- counted before this worker saw the /clear: their series are gone
    end
    for k, v in pairs(b) do
        local _, err = shm:incr(k, v, 0)
        if err then
            local t = now()
            if t - last_err_log >= 10 then
                last_err_log = t
                log(ERR, "alb: metrics dict ", _M.DICT, ": ", err)
            end
        end
    end
end
_M.flush = flush

--- init_worker: the flush timer (a last flush runs when the worker exits)
function _M.init_worker()
    if not shm then
        return
    end
    local ok, err = ngx.timer.every(_M.FLUSH_INTERVAL, flush)
    if not ok then
        log(ERR, "alb: cannot start the metrics flush timer: ", err)
    end
end

-- $upstream_response_time: "0.003", or "0.001, 0.002" / "0.001 : 0.002" after retries and internal redirects
local function upstream_time(s)
    if not s then
        return 0
    end
    local v = tonumber(s)
    if v then
        return v
    end
    v = 0
    for n in gmatch(s, "[%d.]+") do
        v = v + (tonumber(n) or 0)
    end
    return v
end

local router -- alb.router, loaded on first use (it requires alb.features, which requires this module)

--- the rule a request matched. After error_page's internal redirect (`@alb_error`) ngx.ctx is gone: a rule with
--- features left its position in $alb_rule (phase.rewrite); any other rule did not change the request, so
--- matching it again against the current policy finds it (only requests that went upstream: `went_upstream`).
local function matched_rule(ctx, port, went_upstream)
    local rule = ctx.alb_rule
    if rule then
        return rule
    end
    local st = init.state
    local p = st and st.routes[port]
    if not p then
        return nil
    end
    local id = ngx_var.alb_rule
    if id and id ~= "" then
        return p.rules[tonumber(id)]
    end
    if not went_upstream then
        return nil
    end
    router = router or require("alb.router")
    return (router.match(st.routes, port, {}))
end

--- rule id to keep in $alb_rule (phase.rewrite, matched requests with features that go upstream): the rule's
--- position as a string, made once per position (alb/router.lua clears `rule.id` when a policy moves the rule)
function _M.rule_id(rule)
    local id = rule.id
    if not id then
        id = tostring(rule.i)
        rule.id = id
    end
    return id
end

local get_method = ngx.req.get_method
local start_time = ngx.req.start_time

-- $request_time as nginx computes it (cached clock minus the request's start, whole milliseconds, not below 0),
-- without formatting it as text and parsing it back; the same double as tonumber("0.003")
local function request_time()
    local ms = floor((now() - start_time()) * 1000 + 0.5)
    if ms <= 0 then
        return 0
    end
    return ms / 1000
end

--- log phase of the HTTP listeners: `port` is the listener's (nginx.conf passes it)
function _M.log(port)
    if not shm then
        return
    end
    -- one shared-dict read: a /clear answered by another worker is seen by the very next request (exact counts);
    -- every cache and count from before is stale (rule caches are checked below)
    if check_gen() then
        buf = {}
    end
    -- Reading $status, $request_method and $request_time as variables, or one map of all seven split by a
    -- pattern (as this module did), has nginx format numbers into strings for Lua to parse back: ~1 us per
    -- request more (e2e/bench/README.md, "Where the data plane's CPU per request goes").
    local ctx = ngx.ctx
    local status = ngx.status or 0
    local method = get_method()
    local uaddr = ngx_var.upstream_addr or ""
    local rule = matched_rule(ctx, port, uaddr ~= "")
    local c
    if rule then
        c = rule.metrics
        if not c or c.gen ~= cur_gen then
            c = rule_cache(rule, port)
        end
    else
        c = nomatch[port]
        if not c then
            c = new_cache(port, "", nil)
            nomatch[port] = c
        end
    end
    local e = status_keys(c, status, method)
    incr(e[1], 1)
    incr(e[2], tonumber(ngx_var.request_length) or 0)
    incr(e[3], tonumber(ngx_var.bytes_sent) or 0)
    local t = request_time()
    local d = c.duration
    if not d then
        d = hist_keys(M_DURATION, c.base .. c.src)
        c.duration = d
    end
    incr(d[bucket(t)], 1)
    incr(d.s, t)
    if rule then
        local u = upstream_entry(c, uaddr)
        incr(upstream_status_key(c, u, status, method), 1)
        local ut = upstream_time(ngx_var.upstream_response_time)
        d = u.duration
        incr(d[bucket(ut)], 1)
        incr(d.s, ut)
    else
        local k = c.mismatch[method]
        if not k then
            k = register(M_MISMATCH .. '{port="' .. esc(port) .. '",method="' .. esc(method) .. '"}')
            room(c)
            c.mismatch[method] = k
        end
        incr(k, 1)
    end
    if ctx.alb_err then
        local k = c.alb_error
        if not k then
            k = register(M_ALB_ERROR .. '{port="' .. esc(port) .. '"}')
            c.alb_error = k
        end
        incr(k, 1)
    end
end

---------------------------------------------------------------------------------------------------------------
-- metrics server

local function fmt_num(v)
    if v == floor(v) and v > -1e15 and v < 1e15 then
        return string.format("%d", v)
    end
    return tostring(v)
end

local function respond(status, body, ctype)
    ngx.status = status
    ngx.header["Content-Type"] = ctype or "text/plain"
    ngx.header["Cache-Control"] = "no-store"
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end

-- as the original: any `Authorization: Bearer <x>` is accepted, the token itself is not checked
local function authorized()
    if not _M.auth then
        return true
    end
    local h = ngx_var.http_authorization
    return h ~= nil and find(h, "^%s*[Bb][Ee][Aa][Rr][Ee][Rr]%s+%S") ~= nil
end

-- deletes every series (the generation survives and moves on, so the workers register their series again)
local function clear()
    local keys = shm:get_keys(0)
    shm:incr(GEN, 1, 0)
    for i = 1, #keys do
        if keys[i] ~= GEN then
            shm:delete(keys[i])
        end
    end
    -- this worker starts over now, the others at their next flush (within FLUSH_INTERVAL)
    buf = {}
    check_gen()
end

--- text exposition of everything in the dict (plus the scrape-time gauges)
function _M.render()
    local texts = {} -- id -> series text
    local values = {} -- id -> value (counter) or {[1..NB] counts, s = sum} (histogram)
    local keys = shm:get_keys(0)
    for i = 1, #keys do
        local key = keys[i]
        local v = shm:get(key)
        if byte(key, 1) == HASH then
            if key ~= GEN and type(v) == "string" then
                texts[sub(key, 2)] = v
            end
        elseif type(v) == "number" then
            local colon = find(key, ":", 1, true)
            if colon then
                local id = sub(key, 1, colon - 1)
                local series = values[id]
                if type(series) ~= "table" then
                    series = { s = 0 }
                    for j = 1, NB do
                        series[j] = 0
                    end
                    values[id] = series
                end
                local slot = sub(key, colon + 1)
                if slot == "s" then
                    series.s = v
                else
                    local j = tonumber(slot)
                    if j and j >= 1 and j <= NB then
                        series[j] = v
                    end
                end
            else
                values[key] = v
            end
        end
    end

    -- family -> text -> value (summed over the ids of the same series)
    local fams = {}
    for id, v in pairs(values) do
        local text = texts[id] -- nil: registered before a clear, or evicted; dropped
        if text then
            local brace = find(text, "{", 1, true)
            local name = brace and sub(text, 1, brace - 1) or text
            local f = fams[name]
            if not f then
                f = {}
                fams[name] = f
            end
            local old = f[text]
            if type(v) == "table" then
                if type(old) == "table" then
                    for j = 1, NB do
                        old[j] = old[j] + v[j]
                    end
                    old.s = old.s + v.s
                elseif old == nil then
                    f[text] = v
                end
            elseif type(old) == "number" then
                f[text] = old + v
            elseif old == nil then
                f[text] = v
            end
        end
    end

    local out, n = {}, 0
    local function emit(s)
        n = n + 1
        out[n] = s
    end
    for _, fam in ipairs(FAMILIES) do
        local name, typ, help = fam[1], fam[2], fam[3]
        emit("# HELP " .. name .. " " .. help .. "\n# TYPE " .. name .. " " .. typ .. "\n")
        if name == M_CONN then
            for _, state in ipairs({ "active", "reading", "waiting", "writing" }) do
                emit(M_CONN .. '{state="' .. state .. '"} ' .. (ngx_var["connections_" .. state] or 0) .. "\n")
            end
        elseif name == M_CACHE then
            emit(M_CACHE .. " " .. fmt_num(shm:free_space()) .. "\n")
        end
        local f = fams[name]
        if f then
            local texts_sorted = {}
            for text in pairs(f) do
                texts_sorted[#texts_sorted + 1] = text
            end
            sort(texts_sorted)
            for _, text in ipairs(texts_sorted) do
                local v = f[text]
                if typ == "histogram" then
                    if type(v) == "table" then
                        local labels = sub(text, #name + 1) -- "{...}"
                        local open = sub(labels, 1, -2)
                        local sep = (open == "{") and "" or ","
                        local cum = 0
                        for j = 1, NB do
                            cum = cum + v[j]
                            emit(name .. "_bucket" .. open .. sep .. 'le="' .. LE[j] .. '"} ' .. fmt_num(cum) .. "\n")
                        end
                        emit(name .. "_sum" .. labels .. " " .. fmt_num(v.s) .. "\n")
                        emit(name .. "_count" .. labels .. " " .. fmt_num(cum) .. "\n")
                    end
                elseif type(v) == "number" then
                    emit(text .. " " .. fmt_num(v) .. "\n")
                end
            end
        end
    end
    return concat(out)
end

--- /metrics
function _M.collect()
    if not authorized() then
        return respond(401, "Unauthorized")
    end
    if not shm then
        return respond(503, "metrics disabled\n")
    end
    flush()
    local body = _M.render()
    -- as the original: start over when the dict is almost full (series from evicted keys would be wrong anyway)
    local cap = shm:capacity()
    local free = shm:free_space()
    if free < cap * 0.1 then
        log(WARN, "alb: metrics dict ", _M.DICT, " has ", free, " of ", cap,
            " bytes free (< 10%): all metrics reset after this scrape")
        clear()
    end
    return respond(200, body, "text/plain; version=0.0.4")
end

--- /clear
function _M.clear_handler()
    if not authorized() then
        return respond(401, "Unauthorized")
    end
    if not shm then
        return respond(503, "metrics disabled\n")
    end
    clear()
    log(NOTICE, "alb: metrics cleared")
    return respond(200, "ok\n")
end

return _M
