-- config.error_pages (docs/policy.md "Rule config (v1)"): ingress-nginx's custom-http-errors + default-backend.
--
-- nginx's proxy_intercept_errors / error_page are static per location, so only the requests of rules with
-- error pages take another way: features.early ends with ngx.exec("@alb_ep"), a named location that proxies
-- like `location /` but intercepts every upstream status 400..599 (error_page ... = @alb_ep_err).
-- @alb_ep_err then proxies to the rule's error backend when the status is in the rule's `codes` (GET /, headers
-- X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Request-ID), and otherwise answers the status
-- itself (the upstream body is gone once intercepted). A rule whose group has no endpoints goes to the error
-- backend directly (X-Code: 503). ngx.ctx does not survive ngx.exec / error_page: the rule is found again from
-- $alb_ep_rule ("<policy version>:<port>:<position>").
local u = require("alb.features.util")

local ngx = ngx
local ngx_var = ngx.var
local header = ngx.header
local tonumber = tonumber
local tostring = tostring
local type = type
local match = string.match
local set_header = ngx.req.set_header

local _M = {}

function _M.compile(e, path)
    if not u.is_object(e) then
        u.fail(path, "must be an object")
    end
    local codes = {}
    local list = e.codes
    if not u.absent(list) then
        if not u.is_array(list) then
            u.fail(path .. ".codes", "must be an array of integers")
        end
        for i, c in ipairs(list) do
            if not u.is_int(c) or c < 400 or c > 599 then
                u.fail(path .. ".codes[" .. (i - 1) .. "]", "must be an integer in 400..599")
            end
            codes[c] = true
        end
    end
    if not u.absent(e.service) and not u.is_object(e.service) then
        u.fail(path .. ".service", "must be an object")
    end
    local upstream = u.opt_string(e.upstream, path .. ".upstream")
    if not upstream or upstream == "" then
        return nil -- not resolved by the compiler: no error backend, feature off
    end
    return { codes = codes, upstream = upstream }
end

-- loaded lazily: these modules require alb.features, which requires this one
local init, metrics, features

--- end of features.early: hand the request to @alb_ep (never returns), unless grpc or no upstream
function _M.enter()
    local ctx = ngx.ctx
    local rule = ctx.alb_rule
    if not rule or not rule.upstream or rule.grpc or ctx.alb_grpc then
        return
    end
    init = init or require("alb.init")
    local st = init.state
    ngx_var.alb_ep_rule = tostring(st.version) .. ":" .. tostring(ctx.alb_port) .. ":" .. rule.i
    return ngx.exec("@alb_ep")
end

-- the rule of $alb_ep_rule in the current policy (nil when the policy changed since), and the state
local function find()
    init = init or require("alb.init")
    local st = init.state
    local v, port, i = match(ngx_var.alb_ep_rule or "", "^([^:]*):(%d+):(%d+)$")
    if not st or not v or v ~= tostring(st.version) then
        return nil, st
    end
    local p = st.routes[port]
    return p and p.rules[tonumber(i)], st, port
end

--- rewrite phase of @alb_ep: what phase.rewrite does after the match, for a rule with error pages
function _M.rewrite()
    local rule, st, port = find()
    if not rule then
        return u.alb_error(500, "InvalidBalancer : rule of error_pages not found")
    end
    local ctx = ngx.ctx
    ctx.alb_rule = rule
    ctx.alb_port = port
    metrics = metrics or require("alb.metrics")
    if metrics.enabled then
        ngx_var.alb_rule = metrics.rule_id(rule)
    end
    local b = st.balancers[rule.upstream]
    if not b or b.n == 0 then
        ngx_var.alb_ep_code = "503"
        return ngx.exec("@alb_ep_err")
    end
    ctx.alb_bal = b
    if rule.scheme ~= "http" then
        ngx_var.alb_backend_scheme = rule.scheme
    end
    local f = rule.features
    if f.late then
        features = features or require("alb.features")
        features.late(f)
    end
end

local function last_number(s)
    return tonumber(match(s or "", "(%d+)%D*$"))
end

-- a status not in the rule's list: the client gets it as nginx would have passed it, without the body
local function pass(code)
    if (last_number(ngx_var.upstream_bytes_received) or 0) == 0 then
        -- no answer from the backend (connect failure, timeout): the usual `X-Error: <status>` body
        ngx.status = code
        header["Content-Type"] = "text/plain"
        ngx.print("X-Error: ", code, "\n")
        return ngx.exit(ngx.HTTP_OK)
    end
    return u.alb_error(code, "BackendError : read " .. tostring(ngx_var.upstream_bytes_received)
        .. " byte data from backend")
end

--- rewrite phase of @alb_ep_err: after an intercepted upstream error, or from @alb_ep (no endpoints)
function _M.error_rewrite()
    local code = tonumber(ngx_var.alb_ep_code)
    local intercepted = code == nil
    if intercepted then
        code = last_number(ngx_var.upstream_status) or 502
    end
    local rule, st = find()
    local ep = rule and rule.features and rule.features.errors
    local b = ep and st.balancers[ep.upstream]
    if not b or b.n == 0 or (intercepted and not ep.codes[code]) then
        if intercepted then
            return pass(code)
        end
        -- required here: alb.router loads the features, this module among them
        return u.alb_error(500, require("alb.router").no_balancer(rule))
    end
    local ctx = ngx.ctx
    ctx.alb_rule = rule
    ctx.alb_bal = b
    ngx_var.alb_backend_scheme = "http"
    local src = type(rule.source) == "table" and rule.source or {}
    set_header("X-Code", tostring(code))
    set_header("X-Format", ngx_var.http_accept)
    set_header("X-Original-URI", ngx_var.request_uri)
    set_header("X-Namespace", type(src.namespace) == "string" and src.namespace or nil)
    set_header("X-Ingress-Name", type(src.name) == "string" and src.name or nil)
    set_header("X-Request-ID", ngx_var.http_x_request_id or ngx_var.request_id)
    ngx.req.set_uri("/")
    ngx.req.set_uri_args("")
end

return _M
