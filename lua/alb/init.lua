-- Process-level setup and per-worker policy application (docs/policy.md "Policy API", "Policy deltas").
--
-- Shared dict `alb_policy` layout (written by alb/api.lua under a lock, read here):
--   version              number, version of the stored policy (absent: nothing stored)
--   full                 number F <= version: the last version stored whole
--   body:<F>             raw policy JSON of version F (and full_bytes: its size)
--   delta:<v>            raw delta JSON of version v, for F < v <= version (each applies to version v - 1)
--   chain_bytes          total size of the deltas after F
--   digest:<v>           sha1 hex of policy v's bytes (for a delta: the digest the controller gave)
--   generation:<v>       controller generation of version v
--   ack:<worker id>      JSON {id, pid, digest, version, compiled} of what that worker applied
--   owner:<worker id>    pid of the newest worker with that id (write_ack)
-- Versioned keys are written before `version` moves and the chain is deleted after a whole policy replaced it,
-- so a reader that finds a piece gone simply retries on its next tick.
local cjson = require("cjson")
local router = require("alb.router")
local balancer = require("alb.balancer")
local alb_ssl = require("alb.ssl")
local delta = require("alb.delta")

local ngx = ngx
local log = ngx.log
local ERR, NOTICE = ngx.ERR, ngx.NOTICE

local _M = {
    DICT = "alb_policy",
    -- seconds between two checks of the stored version (one shared-dict get): bounds the propagation delay
    POLL_INTERVAL = 0.01,
    -- what this worker applied: {version, digest, generation, routes, balancers}; nil until a policy arrived
    state = nil,
    api_port = nil,
}

local token -- set in the master (init_by_lua), inherited by the workers

local function trim(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

--- init{token_file=, api_port=}: init_by_lua (master). Fails nginx start when the token cannot be read.
local PRELOAD = {
    "alb.api", "alb.phase", "alb.router", "alb.balancer", "alb.expr", "alb.schema", "alb.metrics", "alb.ssl",
    "alb.delta",
    "alb.features", "alb.features.util", "alb.features.affinity", "alb.features.auth", "alb.features.cors",
    "alb.features.headers", "alb.features.redirect", "alb.features.rewrite", "alb.features.access",
    "alb.features.limit", "alb.features.body", "alb.features.errors",
}

function _M.init(opts)
    opts = opts or {}
    local f, err = io.open(opts.token_file or "", "rb")
    if not f then
        error("alb: cannot read policy token file " .. tostring(opts.token_file) .. ": " .. tostring(err))
    end
    local t = f:read("*a")
    f:close()
    t = trim(t or "")
    if t == "" then
        error("alb: policy token file " .. tostring(opts.token_file) .. " is empty")
    end
    token = t
    -- Load every module now, in the master: workers inherit them at fork and never read Lua files, which they
    -- could not when the master is root and the Lua folder is readable by root only (workers run as nobody).
    for _, m in ipairs(PRELOAD) do
        require(m)
    end
    _M.api_port = opts.api_port
end

function _M.token()
    return token
end

local applied_version, failed_version

-- After a HUP the master starts new workers and stops the old ones only ~100 ms later (longer on a busy
-- machine); meanwhile both generations run this timer under the same worker ids. `owner:<id>` is the pid of the
-- newest worker with that id (set in init_worker): an older worker still applies policies but never overwrites
-- the ack of its successor, so /status (and a push waiting for every worker) sees the workers that stay.
local function write_ack(dict, st, err)
    if dict:get("owner:" .. ngx.worker.id()) ~= ngx.worker.pid() then
        return
    end
    local ack = {
        id = ngx.worker.id(),
        pid = ngx.worker.pid(),
        digest = st and st.digest or cjson.null,
        version = st and st.version or cjson.null,
        -- rules this worker compiled for that policy (the others reused, docs/policy.md "Rule keys")
        compiled = st and st.compiled or cjson.null,
    }
    if err then
        ack.error = err
    end
    local ok, serr = dict:safe_set("ack:" .. ack.id, cjson.encode(ack))
    if not ok then
        log(ERR, "alb: cannot store worker ack: ", serr)
    end
end

--- rule.header_filter: requests of the rule need the Lua header filter (phase.rewrite hands them to @alb_hf):
--- response headers, CORS or auth cookies, or an affinity cookie of its backend group. Set once per policy here,
--- where the rules and the balancers of the same policy are both known, not per request.
local function mark_header_filters(routes, bals)
    for _, p in pairs(routes) do
        local rules = p.rules
        for i = 1, #rules do
            local r = rules[i]
            local b = r.upstream and bals[r.upstream]
            local aff = b and b.affinity
            r.header_filter = (r.features ~= nil and r.features.filter) or (aff ~= nil and aff.kind == "cookie")
        end
    end
end

-- The policy of version `v` as a decoded table: patched from what this worker holds when `v` is a delta of the
-- chain after it, else decoded from the last whole policy and patched with every delta after that.
-- Returns doc, touched (nil: decoded whole, rebuild everything; else what the deltas changed), err.
local function decode(body, what)
    local ok, res = pcall(cjson.decode, body)
    if not ok or type(res) ~= "table" then
        return nil, "cannot decode " .. what .. ": " .. tostring(res)
    end
    return res
end

local function load(dict, v)
    local full = dict:get("full")
    if not full or full > v then
        return nil, nil, "superseded"
    end
    local st = _M.state
    local doc, from, touched
    if st and st.doc and st.version >= full and st.version < v then
        doc, from, touched = st.doc, st.version + 1, { groups = {} }
    else
        local body = dict:get("body:" .. full)
        if not body then
            return nil, nil, "superseded"
        end
        local err
        doc, err = decode(body, "stored policy")
        if not doc then
            return nil, nil, err
        end
        from = full + 1
    end
    for u = from, v do
        local body = dict:get("delta:" .. u)
        if not body then
            return nil, nil, "superseded"
        end
        local d, err = decode(body, "stored delta " .. u)
        if not d then
            return nil, nil, err
        end
        doc, err = delta.patch(doc, d, touched)
        if not doc then
            return nil, nil, "delta " .. u .. ": " .. err
        end
    end
    return doc, touched
end

-- seconds -> whole milliseconds, for the log
local function ms(sec)
    return math.floor(sec * 1000 + 0.5)
end

-- the current time, updated (apply runs long enough for the cached time to lag)
local function clock()
    ngx.update_time()
    return ngx.now()
end

--- apply the stored policy if it changed since this worker last applied one
local function apply(premature)
    if premature then
        return
    end
    local dict = ngx.shared[_M.DICT]
    local v = dict:get("version")
    if not v or v == applied_version or v == failed_version then
        return
    end
    local digest = dict:get("digest:" .. v)
    local generation = dict:get("generation:" .. v)
    if not digest then
        return -- superseded while reading; next tick
    end
    local t0 = clock()
    local doc, touched, err = load(dict, v)
    if err == "superseded" then
        return
    end
    local t_load = clock()
    local prev = _M.state
    -- the router is prepared (new rules compiled) first and committed last: committing updates the ports of
    -- the routes in place, so nothing after it may fail
    local plan, bals
    local t_prep, t_bal = t_load, t_load
    if doc then
        plan, err = router.prepare(doc.http, prev and prev.routes)
        t_prep = clock()
        t_bal = t_prep
        if plan then
            local okb, res = pcall(balancer.build, doc.backend_groups, prev and prev.balancers,
                touched and touched.groups)
            if okb then
                bals = res
            else
                plan, err = nil, "balancers: " .. tostring(res)
            end
            t_bal = clock()
        end
    end
    local certs, cert_pems, cert_count
    local same_certs = touched and not touched.certs and prev
    if plan and not same_certs then
        local okc, c, p, n = pcall(alb_ssl.build, doc.certificates)
        if okc then
            certs, cert_pems, cert_count = c, p, n
        else
            plan, err = nil, "certificates: " .. tostring(c)
        end
    end
    local routes
    local t_certs = clock()
    if plan then
        routes = router.commit(plan)
        mark_header_filters(routes, bals)
    end
    if not routes then
        failed_version = v
        log(ERR, "alb: worker ", ngx.worker.id(), " cannot apply policy version ", v, ": ", err)
        write_ack(dict, prev, err)
        return
    end
    _M.state = {
        version = v,
        digest = digest,
        generation = generation,
        doc = doc,
        routes = routes,
        compiled = router.compiled,
        balancers = bals,
        certificates = same_certs and prev.certificates or cert_count,
    }
    if not same_certs then
        alb_ssl.activate(certs, cert_pems)
    end
    applied_version = v
    write_ack(dict, _M.state)
    local t_end = clock()
    log(NOTICE, "alb: worker ", ngx.worker.id(), " applied policy version ", v, " digest ", digest,
        " generation ", generation, " in ", ms(t_end - t0), " ms (",
        router.compiled, " rules compiled, the others reused; ", touched and "patched with deltas" or "decoded whole",
        "; ", router.updated, " of ", #plan, " ports' index updated in place; ms: load ", ms(t_load - t0),
        ", compile ", ms(t_prep - t_load), ", balancers ", ms(t_bal - t_prep), ", certificates ", ms(t_certs - t_bal),
        ", index ", ms(t_end - t_certs), ")")
end
_M.apply = apply

--- init_worker: apply the stored policy now (a HUP'd or respawned worker), then poll.
function _M.init_worker()
    math.randomseed(ngx.now() * 1000 + ngx.worker.pid())
    ngx.shared[_M.DICT]:set("owner:" .. ngx.worker.id(), ngx.worker.pid())
    local ok, err = ngx.timer.at(0, apply)
    if not ok then
        log(ERR, "alb: cannot start policy timer: ", err)
    end
    ok, err = ngx.timer.every(_M.POLL_INTERVAL, apply)
    if not ok then
        log(ERR, "alb: cannot start policy poll timer: ", err)
    end
end

return _M
