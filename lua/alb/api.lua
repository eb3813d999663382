-- Policy API (docs/policy.md "Policy API"), served on 127.0.0.1:<api port> by content_by_lua.
--   PUT /policy   PATCH /policy (a delta)   GET /policy   GET /policy/deltas   GET /status   GET /healthz (no token)
--   GET|POST /debug/match   index lookup vs linear scan in the answering worker (token protected)
local cjson = require("cjson")
local init = require("alb.init")
local schema = require("alb.schema")
local router = require("alb.router")
local expr = require("alb.expr")
local delta = require("alb.delta")
local bit = require("bit")

local ngx = ngx
local type = type
local byte = string.byte
local fmt = string.format
local concat = table.concat
local bor, bxor = bit.bor, bit.bxor
local log = ngx.log
local ERR, NOTICE = ngx.ERR, ngx.NOTICE

local _M = {
    MAX_BODY = 64 * 1024 * 1024,
    -- the deltas stored after a whole policy may add up to its size, and at least this much
    MIN_CHAIN = 256 * 1024,
}

local function respond(status, body, ctype)
    ngx.status = status
    ngx.header["Content-Type"] = ctype or "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end

local function json(status, t)
    return respond(status, cjson.encode(t))
end

local function fail(status, msg)
    return json(status, { error = msg })
end

local function const_eq(a, b)
    if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then
        return false
    end
    local acc = 0
    for i = 1, #a do
        acc = bor(acc, bxor(byte(a, i), byte(b, i)))
    end
    return acc == 0
end

local function authorized()
    local token = init.token()
    local h = ngx.var.http_authorization
    if not token or not h then
        return false
    end
    local given = h:match("^%s*[Bb]earer%s+(.-)%s*$")
    return const_eq(given, token)
end

local function hex(s)
    return (s:gsub(".", function(c)
        return fmt("%02x", byte(c))
    end))
end

local function read_body()
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body then
        return body
    end
    local file = ngx.req.get_body_file()
    if not file then
        return nil
    end
    local f, err = io.open(file, "rb")
    if not f then
        return nil, "cannot read request body file: " .. tostring(err)
    end
    body = f:read("*a")
    f:close()
    return body
end

local function lock(dict)
    for _ = 1, 2000 do -- ~10 s
        local ok, err = dict:add("lock", true, 10)
        if ok then
            return true
        end
        if err ~= "exists" then
            return nil, err
        end
        ngx.sleep(0.005)
    end
    return nil, "timed out waiting for another push"
end

local function unlock_with(dict, status, msg)
    dict:delete("lock")
    return nil, status, msg
end

-- sets keys[i] = vals[i]; on failure deletes them all and returns status, message
local function set_all(dict, keys, vals, size)
    for i = 1, #keys do
        local ok, err = dict:safe_set(keys[i], vals[i])
        if not ok then
            for j = 1, #keys do
                dict:delete(keys[j])
            end
            return err == "no memory" and 507 or 500,
                fmt("cannot store the policy (%d bytes) in shared dict %s: %s%s", size, init.DICT, err,
                    err == "no memory" and " (policy_dict_size too small)" or "")
        end
    end
end

-- deletes versions first..last (a replaced whole policy and the deltas after it)
local function drop_chain(dict, first, last)
    for u = first, last do
        dict:delete("body:" .. u)
        dict:delete("delta:" .. u)
        dict:delete("digest:" .. u)
        dict:delete("generation:" .. u)
    end
end

-- a whole policy: becomes version old + 1 and the new start of the chain
local function store(dict, body, digest, generation)
    local ok, err = lock(dict)
    if not ok then
        return nil, 503, "cannot lock policy store: " .. tostring(err)
    end
    local old = dict:get("version")
    local v = (old or 0) + 1
    local status, msg = set_all(dict, { "body:" .. v, "digest:" .. v, "generation:" .. v },
        { body, digest, generation }, #body)
    if status then
        return unlock_with(dict, status, msg)
    end
    -- `full` before `version`: a reader that sees the new version finds its body
    local first = dict:get("full") or old
    dict:set("full", v)
    dict:set("full_bytes", #body)
    dict:set("chain_bytes", 0)
    ok, err = dict:safe_set("version", v)
    if not ok then
        return unlock_with(dict, 500, "cannot store the policy version: " .. tostring(err))
    end
    if old then
        drop_chain(dict, first or old, old)
    end
    dict:delete("lock")
    return v
end

-- The request body, decoded and checked by `validate` (schema.validate or schema.validate_delta, against the
-- rules this worker compiled): body, doc, rules checked. On a bad body it answers the error and returns nil.
local function read_checked(what, validate)
    local body, err = read_body()
    if not body or body == "" then
        fail(err and 500 or 400, err or "empty body")
        return nil
    end
    if #body > _M.MAX_BODY then
        fail(413, what .. " larger than 64 MiB")
        return nil
    end
    local ok, doc = pcall(cjson.decode, body)
    if not ok then
        fail(400, "invalid JSON: " .. tostring(doc))
        return nil
    end
    local valid, res = validate(doc, init.state and init.state.routes)
    if not valid then
        log(NOTICE, "alb: ", what, " refused: ", res)
        fail(400, res)
        return nil
    end
    return body, doc, res
end

local function put_policy()
    local body, doc, res = read_checked("policy", schema.validate)
    if not body then
        return
    end
    local digest = hex(ngx.sha1_bin(body))
    local generation = type(doc.generation) == "number" and doc.generation or 0
    doc = nil -- luacheck: ignore
    local dict = ngx.shared[init.DICT]
    local v, status, msg = store(dict, body, digest, generation)
    if not v then
        log(ERR, "alb: ", msg)
        return fail(status, msg)
    end
    log(NOTICE, "alb: stored policy version ", v, " digest ", digest, " generation ", generation, " (",
        #body, " bytes, ", res, " rules checked)")
    return json(200, { digest = digest, version = v, checked = res })
end

-- a delta (docs/policy.md "Policy deltas"): stored after the stored policy when it applies to it. The answering
-- worker first brings itself to the stored version and applies the delta to what it holds: a key that the base
-- does not have on that port refuses the delta here, not later in every worker.
local function store_delta(dict, d, body)
    local ok, err = lock(dict)
    if not ok then
        return nil, 503, "cannot lock policy store: " .. tostring(err)
    end
    local old = dict:get("version")
    if not old then
        return unlock_with(dict, 409, "no policy stored: send it whole")
    end
    local stored = dict:get("digest:" .. old)
    if stored ~= d.base then
        return unlock_with(dict, 409, fmt("base %s is not the stored policy (%s): send it whole", d.base,
            tostring(stored)))
    end
    local chain = (dict:get("chain_bytes") or 0) + #body
    local limit = math.max(dict:get("full_bytes") or 0, _M.MIN_CHAIN)
    if chain > limit then
        return unlock_with(dict, 409, fmt("the deltas after the last whole policy would reach %d bytes, more "
            .. "than %d (the whole policy's size, at least %d): send it whole", chain, limit, _M.MIN_CHAIN))
    end
    init.apply()
    local st = init.state
    if not st or st.version ~= old or not st.doc then
        return unlock_with(dict, 409, "this worker could not apply the stored policy: send it whole")
    end
    local patched
    patched, err = delta.patch(st.doc, d)
    if not patched then
        return unlock_with(dict, 400, err)
    end
    local v = old + 1
    local generation = type(d.generation) == "number" and d.generation or 0
    local status, msg = set_all(dict, { "delta:" .. v, "digest:" .. v, "generation:" .. v },
        { body, d.digest, generation }, #body)
    if status then
        return unlock_with(dict, status, msg)
    end
    dict:set("chain_bytes", chain)
    ok, err = dict:safe_set("version", v)
    if not ok then
        return unlock_with(dict, 500, "cannot store the policy version: " .. tostring(err))
    end
    dict:delete("lock")
    return v
end

local function patch_policy()
    local body, d, res = read_checked("policy delta", schema.validate_delta)
    if not body then
        return
    end
    local dict = ngx.shared[init.DICT]
    local v, status, msg = store_delta(dict, d, body)
    if not v then
        log(status >= 500 and ERR or NOTICE, "alb: policy delta not stored: ", msg)
        return fail(status, msg)
    end
    log(NOTICE, "alb: stored policy version ", v, " digest ", d.digest, " generation ", d.generation, " (delta of ",
        #body, " bytes, ", res, " rules checked)")
    return json(200, { digest = d.digest, version = v, checked = res, delta = true })
end

-- the stored version and the version of the last policy stored whole (nil when nothing is stored)
local function chain_head(dict)
    local v = dict:get("version")
    if not v then
        return nil
    end
    return v, dict:get("full") or v
end

local function get_policy()
    local dict = ngx.shared[init.DICT]
    for _ = 1, 3 do
        local v, full = chain_head(dict)
        if not v then
            return fail(404, "no policy stored")
        end
        local body = dict:get("body:" .. full)
        if body then
            ngx.header["X-ALB-Policy-Digest"] = dict:get("digest:" .. full)
            ngx.header["X-ALB-Policy-Version"] = full
            if v > full then
                ngx.header["X-ALB-Policy-Deltas"] = v - full
            end
            return respond(200, body)
        end
    end
    return fail(503, "policy is being replaced, retry")
end

local function get_deltas()
    local dict = ngx.shared[init.DICT]
    for _ = 1, 3 do
        local v, full = chain_head(dict)
        if not v then
            return fail(404, "no policy stored")
        end
        local base = dict:get("digest:" .. full)
        local out, whole = {}, base ~= nil
        for u = full + 1, v do
            out[#out + 1] = dict:get("delta:" .. u)
            if not out[#out] then
                whole = false
                break
            end
        end
        if whole and dict:get("full") == full then
            return respond(200, fmt('{"base":"%s","deltas":[%s]}', base, concat(out, ",")))
        end
    end
    return fail(503, "policy is being replaced, retry")
end

local function get_status()
    local dict = ngx.shared[init.DICT]
    local stored = cjson.null
    local v = dict:get("version")
    if v then
        stored = {
            digest = dict:get("digest:" .. v) or cjson.null,
            version = v,
            generation = dict:get("generation:" .. v) or cjson.null,
        }
    end
    local n = ngx.worker.count()
    local workers = {}
    for id = 0, n - 1 do
        local a = dict:get("ack:" .. id)
        if a then
            workers[#workers + 1] = a
        end
    end
    return respond(200, fmt('{"stored":%s,"worker_count":%d,"workers":[%s]}', cjson.encode(stored), n,
        concat(workers, ",")))
end

-- debug: evaluate one query {port, host, uri, method, src_ip, headers, args, cookies} with the index and
-- with a linear scan, in this worker's applied policy
local function describe(r, reason)
    if r then
        return { rule = r.i - 1, name = r.name }
    end
    return { reason = reason }
end

local function debug_one(st, q)
    local port = tostring(q.port or "")
    local c1 = expr.new_static_cache(q)
    local c2 = expr.new_static_cache(q)
    local r1, e1 = router.match(st.routes, port, c1)
    local r2, e2 = router.match_linear(st.routes, port, c2)
    return { index = describe(r1, e1), linear = describe(r2, e2), same = (r1 == r2 and e1 == e2) }
end

local function debug_match()
    local st = init.state
    if not st then
        return fail(404, "no policy applied in this worker")
    end
    local method = ngx.req.get_method()
    if method == "POST" or method == "PUT" then
        local body = read_body()
        local ok, qs = pcall(cjson.decode, body or "")
        if not ok or type(qs) ~= "table" then
            return fail(400, "body must be a JSON array of queries")
        end
        local out, ports = {}, {}
        for i = 1, #qs do
            out[i] = cjson.encode(debug_one(st, qs[i]))
            local port = type(qs[i]) == "table" and tostring(qs[i].port or "") or ""
            local p = st.routes[port]
            if p and not ports[port] then
                ports[port] = router.verify(p) or "ok"
            end
        end
        -- index_check: per port queried, "ok" or how its index differs from one built whole (router.verify)
        return respond(200, fmt('{"version":%d,"results":[%s],"index_check":%s}', st.version, concat(out, ","),
            next(ports) and cjson.encode(ports) or "{}"))
    end
    local args = ngx.req.get_uri_args()
    local q = { port = args.port, host = args.host, uri = args.uri, method = args.method, src_ip = args.src_ip,
        headers = {}, args = {}, cookies = {} }
    for k, v in pairs(args) do
        if type(v) == "table" then
            v = v[1]
        end
        if v == true then
            v = ""
        end
        local kind, name = k:match("^([hac])%.(.+)$")
        if kind == "h" then
            q.headers[name] = v
        elseif kind == "a" then
            q.args[name] = v
        elseif kind == "c" then
            q.cookies[name] = v
        end
    end
    local res = debug_one(st, q)
    res.version = st.version
    return json(200, res)
end

local ROUTES = {
    ["/policy"] = { PUT = put_policy, PATCH = patch_policy, GET = get_policy },
    ["/policy/deltas"] = { GET = get_deltas },
    ["/status"] = { GET = get_status },
    ["/debug/match"] = { GET = debug_match, POST = debug_match, PUT = debug_match },
}

function _M.handle()
    local uri = ngx.var.uri
    local method = ngx.req.get_method()
    if uri == "/healthz" then
        return respond(200, "ok", "text/plain")
    end
    if not authorized() then
        ngx.header["WWW-Authenticate"] = "Bearer"
        return fail(401, "missing or wrong bearer token")
    end
    local r = ROUTES[uri]
    if not r then
        return fail(404, "no such endpoint " .. uri)
    end
    local h = r[method]
    if not h then
        ngx.header["Allow"] = table.concat((function()
            local m = {}
            for k in pairs(r) do m[#m + 1] = k end
            table.sort(m)
            return m
        end)(), ", ")
        return fail(405, "method " .. method .. " not allowed on " .. uri)
    end
    return h()
end

return _M
