-- config.cors (dataplane.md §4.4): OPTIONS answered 204 by the gateway; CORS headers on every other response.
local u = require("alb.features.util")

local ngx = ngx
local ngx_var = ngx.var
local header = ngx.header
local concat = table.concat
local find = string.find
local sub = string.sub
local ipairs = ipairs
local tostring = tostring

local _M = {}

local DEFAULT_METHODS = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
local DEFAULT_HEADERS = "DNT,X-CustomHeader,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,"
    .. "Cache-Control,Content-Type,Authorization"

function _M.compile(c, path)
    if not u.is_object(c) then
        u.fail(path, "must be an object")
    end
    local origins = u.string_list(c.allow_origin, path .. ".allow_origin") or {}
    local cc = {
        any = #origins == 0,
        exact = {},
        wild = {}, -- {scheme_and_dot_prefix, suffix}: "https://*.a.com" -> "https://", ".a.com"
        methods = u.opt_string(c.allow_methods, path .. ".allow_methods") or DEFAULT_METHODS,
        headers = u.opt_string(c.allow_headers, path .. ".allow_headers") or DEFAULT_HEADERS,
        expose = u.opt_string(c.expose_headers, path .. ".expose_headers"),
        credentials = u.opt_bool(c.allow_credentials, path .. ".allow_credentials"),
        max_age = tostring(u.opt_uint(c.max_age, path .. ".max_age") or 1728000),
    }
    if cc.credentials == nil then
        cc.credentials = true
    end
    for i, o in ipairs(origins) do
        if o == "*" then
            cc.any = true
        elseif find(o, "[%s,]") then
            u.fail(path .. ".allow_origin[" .. (i - 1) .. "]", "must be one origin")
        else
            local star = find(o, "://*.", 1, true)
            if star then
                cc.wild[#cc.wild + 1] = { sub(o, 1, star + 2), sub(o, star + 4) }
            else
                cc.exact[o] = true
            end
        end
    end
    cc.configured = concat(origins, ",")
    return cc
end

local function allowed(cc, origin)
    if cc.exact[origin] then
        return true
    end
    local w = cc.wild
    for i = 1, #w do
        local pre, suf = w[i][1], w[i][2]
        local ol, pl, sl = #origin, #pre, #suf
        if ol > pl + sl and sub(origin, 1, pl) == pre and sub(origin, -sl) == suf then
            -- one or more labels in between, nothing that is not a host character
            local mid = sub(origin, pl + 1, ol - sl)
            if not find(mid, "[^%w%-%.]") then
                return true
            end
        end
    end
    return false
end

local function set_headers(cc)
    if cc.any then
        header["Access-Control-Allow-Origin"] = "*"
    else
        local origin = ngx_var.http_origin
        if not origin then
            header["Access-Control-Allow-Origin"] = cc.configured
        elseif allowed(cc, origin) then
            header["Access-Control-Allow-Origin"] = origin
            header["Vary"] = "Origin"
        end
    end
    if cc.credentials then
        header["Access-Control-Allow-Credentials"] = "true"
    end
    header["Access-Control-Allow-Methods"] = cc.methods
    header["Access-Control-Allow-Headers"] = cc.headers
    if cc.expose then
        header["Access-Control-Expose-Headers"] = cc.expose
    end
end

--- rewrite phase: answers a preflight (any OPTIONS request), else returns
function _M.preflight(cc, method)
    if method ~= "OPTIONS" then
        return
    end
    ngx.status = 204
    set_headers(cc)
    header["Access-Control-Max-Age"] = cc.max_age
    header["Content-Type"] = "text/plain charset=UTF-8"
    header["Content-Length"] = 0
    ngx.send_headers()
    return ngx.exit(ngx.HTTP_OK)
end

--- header filter of a normal response
function _M.header_filter(cc)
    set_headers(cc)
end

return _M
