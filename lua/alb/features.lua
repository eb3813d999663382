-- Per-rule features (docs/policy.md "Rule config (v1)", dataplane.md §4.1, §4.3–§4.12).
--
-- compile(config) turns a rule's `config` into closures-ready tables once per policy; the same code validates
-- a pushed policy (schema.lua), so whatever is stored can be compiled. The request phases then only run what a
-- rule configured, in the order of dataplane.md §4.1:
--   early (before the upstream checks): access, limit, redirect, CORS preflight, max_body_size; then a rule
--     with error_pages continues in @alb_ep (features/errors.lua), which does the rest of the pipeline
--   late  (after them): vhost, URL rewrite, request headers, auth
--   header filter: CORS headers, response headers, auth cookies, affinity cookie
--   balancer: timeouts, tries
local u = require("alb.features.util")
local redirect = require("alb.features.redirect")
local cors = require("alb.features.cors")
local rewrite = require("alb.features.rewrite")
local headers = require("alb.features.headers")
local auth = require("alb.features.auth")
local access = require("alb.features.access")
local limit = require("alb.features.limit")
local body = require("alb.features.body")
local errors = require("alb.features.errors")

local type = type
local pcall = pcall
local tostring = tostring
local match = string.match
local ngx = ngx
local ngx_var = ngx.var
local header = ngx.header
local get_method = ngx.req.get_method

local _M = {}

local function timeout(t, path)
    if not u.is_object(t) then
        u.fail(path, "must be an object")
    end
    local function sec(k)
        local v = u.opt_uint(t[k], path .. "." .. k)
        if v and v > 0 then
            return v / 1000
        end
        return nil
    end
    local c, s, r = sec("proxy_connect_timeout_ms"), sec("proxy_send_timeout_ms"), sec("proxy_read_timeout_ms")
    if not (c or s or r) then
        return nil
    end
    return { c, s, r }
end

local function tries(t, path)
    if not u.is_object(t) then
        u.fail(path, "must be an object")
    end
    local n = u.opt_uint(t.tries, path .. ".tries", 5)
    if n == 0 then
        u.fail(path .. ".tries", "must be in 1..5")
    end
    return n
end

local function compile_all(cfg)
    local f = {}
    local any = false
    local function set(k, v)
        if v ~= nil then
            f[k] = v
            any = true
        end
    end
    if not u.absent(cfg.redirect) then
        set("redirect", redirect.compile(cfg.redirect, "config.redirect"))
    end
    if not u.absent(cfg.cors) then
        set("cors", cors.compile(cfg.cors, "config.cors"))
    end
    local vhost = u.opt_string(cfg.vhost, "config.vhost")
    if vhost and vhost ~= "" then
        set("vhost", vhost)
        -- TLS SNI to an https upstream: the host without a port
        f.sni = match(vhost, "^%[(.*)%]") or match(vhost, "^([^:]*)")
    end
    if not u.absent(cfg.rewrite) then
        set("rewrite", rewrite.compile(cfg.rewrite, "config.rewrite"))
    end
    if not u.absent(cfg.rewrite_request) then
        set("req", headers.compile_request(cfg.rewrite_request, "config.rewrite_request"))
    end
    if not u.absent(cfg.rewrite_response) then
        set("resp", headers.compile_response(cfg.rewrite_response, "config.rewrite_response"))
    end
    if not u.absent(cfg.timeout) then
        set("timeout", timeout(cfg.timeout, "config.timeout"))
    end
    if not u.absent(cfg.retry) then
        set("tries", tries(cfg.retry, "config.retry"))
    end
    if not u.absent(cfg.auth) then
        set("auth", auth.compile(cfg.auth, "config.auth"))
    end
    if not u.absent(cfg.access) then
        set("access", access.compile(cfg.access, "config.access"))
    end
    if not u.absent(cfg.limit) then
        set("limit", limit.compile(cfg.limit, "config.limit"))
    end
    if not u.absent(cfg.max_body_size) then
        set("body", body.compile(cfg.max_body_size, "config.max_body_size"))
    end
    if not u.absent(cfg.error_pages) then
        set("errors", errors.compile(cfg.error_pages, "config.error_pages"))
    end
    if not any then
        return false
    end
    f.early = f.redirect ~= nil or f.cors ~= nil or f.access ~= nil or f.limit ~= nil or f.body ~= nil
        or f.errors ~= nil
    f.late = f.vhost ~= nil or f.rewrite ~= nil or f.req ~= nil or f.auth ~= nil
    f.filter = f.cors ~= nil or f.resp ~= nil or f.auth ~= nil
    return f
end

--- compile(config) -> features table, or false (nothing configured), or nil, err
function _M.compile(cfg)
    if u.absent(cfg) then
        return false
    end
    if not u.is_object(cfg) then
        return nil, "config must be an object"
    end
    local ok, res = pcall(compile_all, cfg)
    if ok then
        return res
    end
    if type(res) == "table" and res.alb_feature_error then
        return nil, res.alb_feature_error
    end
    return nil, "config: " .. tostring(res)
end

--- rewrite phase, right after the match: may answer (access, limit, redirect, preflight, body size) and not
--- return; a rule with error pages continues in @alb_ep (ngx.exec, never returns)
function _M.early(f, c)
    if f.access then
        access.run(f.access)
    end
    if f.limit then
        limit.run(f.limit)
    end
    if f.redirect then
        redirect.run(f.redirect, c)
    end
    if f.cors then
        cors.preflight(f.cors, get_method())
    end
    if f.body then
        body.run(f.body)
    end
    if f.errors then
        errors.enter()
    end
end

--- log phase of every request of the http listeners (nginx.conf): releases a config.limit.connections slot
_M.log = limit.log

--- rewrite phase, once the upstream is known: may answer (auth) and not return
function _M.late(f)
    if f.vhost then
        ngx_var.custom_host = f.vhost
        ngx_var.alb_proxy_ssl_name = f.sni
    end
    if f.rewrite then
        rewrite.run(f.rewrite)
    end
    if f.req then
        headers.request(f.req)
    end
    if f.auth then
        auth.run(f.auth)
    end
end

--- header filter of a matched request (`f` may be nil: affinity cookie only)
function _M.header_filter(f, ctx)
    if f and f.filter then
        if f.cors then
            cors.header_filter(f.cors)
        end
        if f.resp then
            headers.response(f.resp)
        end
        if f.auth then
            auth.header_filter(ctx)
        end
    end
    local ac = ctx.alb_affinity_cookie
    if ac then
        local cur = header["Set-Cookie"]
        if cur == nil then
            header["Set-Cookie"] = ac
        elseif type(cur) == "table" then
            cur[#cur + 1] = ac
            header["Set-Cookie"] = cur
        else
            header["Set-Cookie"] = { cur, ac }
        end
    end
end

return _M
