-- Request phases of the HTTP listeners (docs/policy.md "Errors the client sees", dataplane.md §4.1, §4.15).
local init = require("alb.init")
local router = require("alb.router")
local balancer = require("alb.balancer")
local metrics = require("alb.metrics")
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
local rule_id = metrics.rule_id

local _M = {}

local REASON = "X-ALB-ERR-REASON"

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

function _M.rewrite()
    local st = init.state
    if not st then
        return alb_error(404, "InvalidUpstream : no policy")
    end
    local c = {}
    local rule, reason = match(st.routes, ngx_var.server_port, c)
    if not rule then
        return alb_error(404, reason)
    end
    local ctx = ngx.ctx
    ctx.alb_rule = rule
    local upstream = rule.upstream
    if not upstream then
        return alb_error(404, "InvalidUpstream : alb upstream not found")
    end
    local b = st.balancers[upstream]
    if not b or b.n == 0 then
        return alb_error(500, rule.no_balancer)
    end
    ctx.alb_bal = b
    if metrics.enabled then
        -- ngx.ctx does not survive error_page's redirect to @alb_error: the log phase finds the rule from this
        ngx_var.alb_rule = rule_id(rule)
    end
    if rule.scheme ~= "http" then
        ngx_var.alb_backend_scheme = rule.scheme
    end
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
    if not first then
        i = pick(b)
        ctx.alb_first = i
        local n = b.n
        if n > 1 then
            local ok, err = set_more_tries(min(4, n - 1))
            if not ok then
                log(ERR, "alb: set_more_tries: ", err)
            end
        end
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
end

function _M.header_filter()
    if ngx.status < 400 then
        return
    end
    local ctx = ngx.ctx
    if not ctx.alb_rule then
        return
    end
    local us = ngx_var.upstream_status
    if not us or us == "" then
        return
    end
    header[REASON] = "BackendError : read " .. (ngx_var.upstream_bytes_received or "0")
        .. " byte data from backend"
end

-- log phase (server level, only when the metrics server is enabled): Prometheus counters
_M.log = metrics.log

return _M
