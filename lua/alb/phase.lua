-- Request phases of the HTTP listeners (docs/policy.md "Errors the client sees", dataplane.md §4.1, §4.15).
local init = require("alb.init")
local router = require("alb.router")
local balancer = require("alb.balancer")
local metrics = require("alb.metrics")
local features = require("alb.features")
local affinity = require("alb.features.affinity")
local ngx_balancer = require("ngx.balancer")

local ngx = ngx
local ngx_var = ngx.var
local header = ngx.header
local min = math.min
local log = ngx.log
local ERR = ngx.ERR
local match = router.match
local pick = balancer.pick
local pick_untried = balancer.pick_untried
local set_current_peer = ngx_balancer.set_current_peer
local set_more_tries = ngx_balancer.set_more_tries
local set_timeouts = ngx_balancer.set_timeouts
local rule_id = metrics.rule_id

local _M = {}

local REASON = "X-ALB-ERR-REASON"
local GRPC_SCHEME = { http = "grpc", https = "grpcs", grpc = "grpc", grpcs = "grpcs" }
local match_str = string.match

-- ALB-generated error: status, reason header, empty body, connection stays usable
local function alb_error(status, reason)
    ngx.ctx.alb_err = true -- metrics: alb_error{port}
    ngx.status = status
    header[REASON] = reason
    header["Content-Length"] = 0
    ngx.send_headers()
    return ngx.exit(ngx.HTTP_OK)
end
_M.alb_error = alb_error

--- rewrite phase of `location /` of an HTTP listener, and of `@alb_hf` (`filtered`). nginx.conf passes the
--- listener's port (the policy's key, a string) and `grpc` on a grpc Frontend: no nginx variable is read for
--- either (each read is an FFI call). `location /` has no header_filter_by_lua (a Lua phase costs ~1-2 us per
--- request even when it does nothing) and proxies to http backends only (a proxy_pass without variables): a
--- rule that needs a header filter or has an https backend is handed to @alb_hf, which runs this again with the
--- filter and `proxy_pass $alb_backend_scheme://` (ngx.ctx does not survive ngx.exec, so the match is done
--- again there).
function _M.rewrite(port, grpc_listener, filtered)
    local st = init.state
    if not st then
        return alb_error(404, "InvalidUpstream : no policy")
    end
    local c = {}
    local rule, reason = match(st.routes, port, c)
    if not rule then
        return alb_error(404, reason)
    end
    if not filtered and not grpc_listener and not rule.grpc and (rule.header_filter or rule.scheme ~= "http") then
        return ngx.exec("@alb_hf")
    end
    local ctx = ngx.ctx
    ctx.alb_rule = rule
    ctx.alb_port = port
    if grpc_listener then
        ctx.alb_grpc = true
    end
    -- rule features (docs/policy.md "Rule config (v1)"): redirect and CORS preflight come first
    local f = rule.features
    if f and f.early then
        features.early(f, c)
    end
    local upstream = rule.upstream
    if not upstream then
        return alb_error(404, "InvalidUpstream : alb upstream not found")
    end
    local b = st.balancers[upstream]
    if not b or b.n == 0 then
        return alb_error(500, router.no_balancer(rule))
    end
    ctx.alb_bal = b
    if f and metrics.enabled then
        -- ngx.ctx does not survive error_page's redirect to @alb_error: the log phase finds the rule from this.
        -- Only rules with features can have changed the request (URL, host); the log phase matches the others
        -- again (metrics.log), which saves this variable write on every request.
        ngx_var.alb_rule = rule_id(rule)
    end
    local scheme = rule.scheme
    if grpc_listener then
        -- a grpc listener: http/https rules (a policy not made by our compiler) mean grpc/grpcs
        scheme = GRPC_SCHEME[scheme] or "grpc"
    end
    if scheme ~= "http" then
        ngx_var.alb_backend_scheme = scheme
    end
    if f and f.late then
        features.late(f)
    end
    if rule.grpc and not grpc_listener then
        -- grpc/grpcs backend on an http(s) listener: only @grpc has grpc_pass; ngx.ctx is lost on exec, the
        -- rule is found again from $alb_grpc_rule
        ngx_var.alb_grpc_rule = port .. ":" .. rule.i
        return ngx.exec("@grpc")
    end
end

-- rewrite phase of @grpc: the rule rewrite() matched, found again from $alb_grpc_rule
function _M.grpc_rewrite()
    local st = init.state
    local port, i = match_str(ngx_var.alb_grpc_rule or "", "^(%d+):(%d+)$")
    local p = st and port and st.routes[port]
    local rule = p and p.rules[tonumber(i)]
    local b = rule and rule.upstream and st.balancers[rule.upstream]
    if not b or b.n == 0 then
        log(ERR, "alb: @grpc without a matched rule (", ngx_var.alb_grpc_rule, ")")
        return alb_error(500, "InvalidBalancer : no balancer found for grpc rule")
    end
    local ctx = ngx.ctx
    ctx.alb_rule = rule
    ctx.alb_bal = b
    ctx.alb_port = port
    ctx.alb_grpc = true
end

function _M.balance()
    local ctx = ngx.ctx
    local b = ctx.alb_bal
    if not b then
        log(ERR, "alb: balancer phase without a matched rule")
        return ngx.exit(500)
    end
    local i
    local first = ctx.alb_first
    local f = ctx.alb_rule.features
    local aff = b.affinity
    if not first then
        if aff then
            i, ctx.alb_pos = affinity.pick(aff, ctx)
        else
            i = pick(b)
        end
        ctx.alb_first = i
        local n = b.n
        local more = min(4, n - 1)
        if f and f.tries then
            more = min(f.tries - 1, more)
        end
        if more > 0 then
            local ok, err = set_more_tries(more)
            if not ok then
                log(ERR, "alb: set_more_tries: ", err)
            end
        end
    elseif aff then
        local tried = ctx.alb_tried
        if not tried then
            tried = { [first] = true }
            ctx.alb_tried = tried
        end
        i, ctx.alb_pos = affinity.next(aff, ctx.alb_pos, tried)
        tried[i] = true
    else
        local tried = ctx.alb_tried
        if not tried then
            tried = { [first] = true }
            ctx.alb_tried = tried
        end
        i = pick_untried(b, tried)
        tried[i] = true
    end
    local ok, err = set_current_peer(b.hosts[i], b.ports[i])
    if not ok then
        log(ERR, "alb: set_current_peer ", b.peers[i], " of ", b.name, ": ", err)
        return ngx.exit(500)
    end
    local t = f and f.timeout
    if t then
        ok, err = set_timeouts(t[1], t[2], t[3])
        if not ok then
            log(ERR, "alb: set_timeouts: ", err)
            return ngx.exit(500)
        end
    end
end

function _M.header_filter()
    local ctx = ngx.ctx
    local rule = ctx.alb_rule
    if rule and (rule.features or ctx.alb_affinity_cookie) then
        features.header_filter(rule.features, ctx)
    end
    if ngx.status < 400 or not rule then
        return
    end
    local us = ngx_var.upstream_status
    if not us or us == "" then
        return
    end
    header[REASON] = "BackendError : read " .. (ngx_var.upstream_bytes_received or "0")
        .. " byte data from backend"
end

--- log phase (server level, every request of the listener whatever location answered it): releases a
--- config.limit.connections slot, counts the metrics (when the metrics server is enabled)
local features_log = features.log
local metrics_log = metrics.log
function _M.log(port)
    features_log()
    if metrics.enabled then
        metrics_log(port)
    end
end

return _M
