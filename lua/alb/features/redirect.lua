-- config.redirect (dataplane.md §4.3): answered before anything else.
local u = require("alb.features.util")
local expr = require("alb.expr")

local ngx = ngx
local ngx_var = ngx.var
local header = ngx.header
local find = string.find
local tostring = tostring

local _M = {}

local CODES = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

function _M.compile(r, path)
    if not u.is_object(r) then
        u.fail(path, "must be an object")
    end
    local code = u.opt_uint(r.code, path .. ".code", 999)
    if not code or code == 0 then
        code = 302
    end
    if not CODES[code] then
        u.fail(path .. ".code", "must be one of 301, 302, 303, 307, 308, got " .. tostring(code))
    end
    local url = u.opt_string(r.url, path .. ".url")
    local scheme = u.opt_string(r.scheme, path .. ".scheme")
    local host = u.opt_string(r.host, path .. ".host")
    local port = u.opt_uint(r.port, path .. ".port", 65535)
    local prefix = u.opt_string(r.prefix_match, path .. ".prefix_match")
    local replace = u.opt_string(r.replace_prefix, path .. ".replace_prefix") or ""
    if scheme == "" then scheme = nil end
    if host == "" then host = nil end
    if port == 0 then port = nil end
    if url == "" then url = nil end
    if prefix == "" then prefix = nil end
    if scheme and scheme ~= "http" and scheme ~= "https" then
        u.fail(path .. ".scheme", "must be http or https")
    end
    local rd = { code = code, keep_query = u.opt_bool(r.keep_query, path .. ".keep_query") or false }
    if url and not scheme and not host and not port then
        rd.fast = url
    else
        rd.scheme, rd.host, rd.url = scheme, host, url
        rd.port = port and (":" .. port) or ""
        rd.prefix, rd.replace = prefix, replace
    end
    return rd
end

--- answers the redirect (never returns)
function _M.run(rd, c)
    local loc = rd.fast
    if not loc then
        local p = rd.url or ngx_var.uri
        if rd.prefix then
            p = u.replace_prefix(p, rd.prefix, rd.replace)
        end
        loc = (rd.scheme or ngx_var.scheme) .. "://" .. (rd.host or expr.get_host(c) or "") .. rd.port .. p
    end
    if rd.keep_query then
        local args = ngx_var.args
        if args and args ~= "" then
            loc = loc .. (find(loc, "?", 1, true) and "&" or "?") .. args
        end
    end
    ngx.status = rd.code
    header["Location"] = loc
    header["Content-Length"] = 0
    ngx.send_headers()
    return ngx.exit(ngx.HTTP_OK)
end

return _M
